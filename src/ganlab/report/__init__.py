"""The report, its results and claims, the plots page and `ganlab exps` (docs/layout.md)."""
