"""The HTML report: one self-contained file per blend, for a competitor to read."""
