"""The `ganlab` command (installed with the project): one entry point for the tools a user types.

    ganlab lab up|down|status|env|add-user|remove-user|backup|restore ...   the team's lab (ganlab.team.lab)
    ganlab sweep run|points|collect ...   sweeps across machines (ganlab.team.sweep)
    ganlab plots-page OUT                 the offline page template of `dvc plots show` (ganlab.report.plots_page)
    ganlab exps                           DVC's experiments in 80 columns, headline numbers (ganlab.report.exps)
    ganlab ui                             MLflow's UI on the store, in model-training mode (ganlab.tracking.ui)
    ganlab compare EXP_A EXP_B [...]      verdicts between two experiments over their seeds (ganlab.report.compare)

Each tool's module is imported only when it is asked for, so `ganlab lab status` does not load torch."""

from __future__ import annotations

import sys
from importlib import import_module
from typing import Optional

TOOLS = {  # name -> (module with main(argv), one line of help)
    "lab": ("ganlab.team.lab", "the team's lab: PostgreSQL, S3 (SeaweedFS), the MLflow server; accounts, backups"),
    "sweep": ("ganlab.team.sweep", "run, list and collect a sweep's points across machines"),
    "plots-page": ("ganlab.report.plots_page", "write the offline page template of `dvc plots show`"),
    "ui": ("ganlab.tracking.ui", "MLflow's UI on this project's store, opening in model-training mode"),
    "exps": ("ganlab.report.exps", "DVC's experiments in 80 columns: what each changed, the headline numbers"),
    "compare": ("ganlab.report.compare", "is a difference between two experiments real? verdicts over seeds"),
}


def usage() -> str:
    width = max(map(len, TOOLS))
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in TOOLS.items()]
    return "usage: ganlab TOOL [ARGS...]\n\ntools:\n" + "\n".join(lines) + "\n\n`ganlab TOOL -h` for a tool's help."


def main(argv: Optional[list[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    if args[0] not in TOOLS:
        print(f"ganlab: unknown tool {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = import_module(TOOLS[args[0]][0])
    return module.main(args[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
