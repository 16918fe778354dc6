"""Stage check_params: validate the whole params.yaml before any other stage runs.

Every stage depends on this one, and DVC deletes a stage's outputs only when it is about to run it, so a refused
value (`dvc exp run -S train.lr_g=-1`) stops the pipeline here and leaves every earlier model, metric and plot in
place. The output holds no parameter, only the word that they are valid: it is the same file after every
successful check, so a change of parameters reruns only the stages that read the changed keys.
It also lists, once, every place where a global override masks a variant's own value.
"""

import argparse
import sys
from pathlib import Path

from ganlab.config import ConfigError, load_params
from ganlab.io import atomic_write

VALID = '{"params": "valid"}\n'


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", type=Path, default=Path("metrics/params_ok.json"))
    ap.add_argument("--touch", type=Path, nargs="*", default=[],
                    help="marker files to write (folders that must exist for later stages' dependencies)")
    args = ap.parse_args()
    try:
        params = load_params(args.params)
    except ConfigError as err:
        print(f"check_params: error: {err}", file=sys.stderr)
        print("check_params: nothing was run and no earlier result was removed; fix the value and run again",
              file=sys.stderr)
        return 1
    if warning := params.masking_line(list(params.variants)):
        print(f"check_params: warning: {warning}", file=sys.stderr)
    atomic_write(args.out, VALID)
    for path in args.touch:  # one line, not empty: DVC warns about every empty output on every run
        atomic_write(path, "keeps this folder for DVC (dvc.yaml stage check_params)\n")
    print(f"check_params: {args.params} is valid ({len(params.variants)} variants)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
