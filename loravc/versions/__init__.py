"""The version catalogue: references, git and DVC reads, show/compare, verify, the GTO registry."""
