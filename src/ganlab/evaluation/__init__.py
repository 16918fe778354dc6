"""Evaluation: the classifier, the metrics, sampling and the pictures (docs/layout.md)."""
