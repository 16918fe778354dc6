"""MLflow tracking: the store (store.py), the training run's tracker (tracker.py), and what later stages and
users do with a run (runs.py). `from ganlab.tracking import load_generator` is the documented way to load a model;
names are looked up lazily, so importing one of the modules does not import the others."""

from importlib import import_module
from typing import Any

_WHERE = {"load_generator": "runs", "log_onto_training_run": "runs", "check_training_run": "runs",
          "log_summary_run": "runs", "MlflowTracker": "tracker", "runs_table_url": "store", "tracking_uri": "store"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'ganlab.tracking' has no attribute {name!r}")
    return getattr(import_module(f"ganlab.tracking.{_WHERE[name]}"), name)
