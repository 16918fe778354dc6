"""The team's lab and sweeps (docs/layout.md)."""
