"""Training: the networks, losses, the step and the loop (docs/layout.md)."""
