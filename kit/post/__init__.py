"""Post-processing: blend, leak, new_whale, balance, pseudo-labels, scoring. Never imports torch."""
