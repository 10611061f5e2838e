"""The member calibrations, one plug-in per file (kit/post/plugins.py); each registers itself on import."""
