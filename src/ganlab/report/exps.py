"""`ganlab exps`: DVC's experiments in 80 columns, the headline numbers first.

`dvc exp show` puts every param and metric of every variant in one row (hundreds of columns). This reads the same
data (`dvc exp show --json`) and prints, per experiment, one line naming it and the params it changed against its
baseline, then one line per variant with that variant's headline numbers (metrics/headline/<dataset>/<v>.json):

    workspace
      variant          fid      d      g  cover
      mnist_vanilla  4.643  1.291  1.273     10
    bce  094c91c  model.loss=bce
      mnist_vanilla  4.308  1.431  1.083     10

    ganlab exps [--keys fid,d,g] [--width 80] [-- DVC EXP SHOW ARGS...]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from typing import Any, Iterator, Optional

HEADLINE = re.compile(r"metrics/headline/[^/]+/(?P<variant>[^/]+)\.json$")
DEFAULT_KEYS = ("fid", "kid", "err", "cover", "acc", "d", "g")


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def rows(show: list[dict[str, Any]]) -> Iterator[tuple[str, str, dict[str, str], dict[str, dict[str, Any]]]]:
    """(name, short rev, changed params {key: value}, headline numbers {variant: {key: value}}) per experiment,
    each baseline first, then its experiments; params are compared with the baseline's."""
    for base in show:
        base_params = _params(base)
        for entry in [base] + [r for e in base.get("experiments") or [] for r in e.get("revs") or []]:
            params = _params(entry)
            changed = {k: v for k, v in params.items() if base_params.get(k) != v} if entry is not base else {}
            rev = entry.get("rev") or ""
            short = rev if rev == "workspace" else rev[:7]
            yield entry.get("name") or short, short, changed, _headline(entry)


def _params(entry: dict[str, Any]) -> dict[str, Any]:
    data = (entry.get("data") or {}).get("params", {}).get("params.yaml", {}).get("data", {})
    return {k: v for k, v in flatten(data).items() if v is not None}


def _headline(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for path, m in ((entry.get("data") or {}).get("metrics") or {}).items():
        if (hit := HEADLINE.search(path)) and isinstance(m.get("data"), dict):
            out[hit["variant"]] = m["data"]
    return out


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def render(show: list[dict[str, Any]], keys: tuple[str, ...] = DEFAULT_KEYS, width: int = 80) -> str:
    """The table as text, no line longer than `width` (long change lists are cut with '…')."""
    table = list(rows(show))
    variants = sorted({v for *_, h in table for v in h})
    used = [k for k in keys if any(k in h.get(v, {}) for *_, h in table for v in variants)]
    name_w = max([len("variant"), *map(len, variants)])
    cols = [(k, max([len(k), *(len(_cell(h[v].get(k))) for *_, h in table for v in h)])) for k in used]
    while cols and 2 + name_w + sum(w + 2 for _, w in cols) > width:
        cols.pop()  # the keys are in order of importance: drop from the right
    lines = ["  " + "variant".ljust(name_w) + "".join(f"  {k:>{w}}" for k, w in cols)]
    for name, rev, changed, head in table:
        title = "  ".join(x for x in (name, rev if rev != name else "",
                                      " ".join(f"{k}={_cell(v)}" for k, v in changed.items())) if x)
        lines.append(title if len(title) <= width else title[:width - 1] + "…")
        for v in variants:
            if v in head:
                lines.append("  " + v.ljust(name_w) + "".join(f"  {_cell(head[v].get(k)):>{w}}" for k, w in cols))
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="ganlab exps", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", default=",".join(DEFAULT_KEYS), help="headline keys to show, most important first")
    ap.add_argument("--width", type=int, default=80)
    ap.add_argument("dvc_args", nargs="*", help="passed to `dvc exp show` (after --), e.g. -A for all commits")
    args = ap.parse_args(argv)
    proc = subprocess.run(["dvc", "exp", "show", "--json", *args.dvc_args], capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"ganlab exps: `dvc exp show --json` failed: {proc.stderr.strip()}", file=sys.stderr)
        return 1
    print(render(json.loads(proc.stdout), tuple(k for k in args.keys.split(",") if k), args.width))
    return 0
