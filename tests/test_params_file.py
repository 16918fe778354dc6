"""params.yaml survives `dvc exp run -S`: the committed file, run through DVC's own -S, changes only the lines that
were set, and every comment that documents a variant stays (DVC rewrites the whole file with ruamel.yaml: flow-style
maps get re-wrapped, their inline comments dropped and every `null` blanked, so the file is kept in that form)."""

from __future__ import annotations

import difflib
import shutil

from helpers import REPO, make_repo, run, git_commit_all

SETS = {  # -S argument: (the committed line, the line DVC must leave)
    "model.loss=bce": ("  loss:  # bce | mse | lsgan | wgan_gp | hinge", "  loss: bce # bce | mse | lsgan | wgan_gp | hinge"),
    "variants.mnist_mlp.train.epochs=8": ("      epochs: 4", "      epochs: 8"),
    "variants.mnist_vanilla.model.g_hidden=[512,1024]": ("      - 1024", "      - 512"),
}


def comments(text: str) -> list[str]:
    return [line[line.index("#"):] for line in text.splitlines() if "#" in line]


def test_dvc_exp_run_set_changes_only_the_lines_it_sets(tmp_path):
    root = make_repo(tmp_path / "repo")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")  # the committed file, byte for byte
    git_commit_all(root)
    before = (root / "params.yaml").read_text()
    argv = [a for s in SETS for a in ("-S", s)]
    run(["dvc", "exp", "run", "-q", "-n", "sets", *argv, "check_params"], root)
    after = (root / "params.yaml").read_text()

    diff = list(difflib.unified_diff(before.splitlines(), after.splitlines(), "committed", "after -S", n=0,
                                     lineterm=""))[2:]
    removed = sorted(line[1:] for line in diff if line.startswith("-"))
    added = sorted(line[1:] for line in diff if line.startswith("+"))
    assert (removed, added) == (sorted(a for a, _ in SETS.values()), sorted(b for _, b in SETS.values())), \
        "\n".join(diff)
    assert [c.lstrip("# ") for c in comments(after)] == [c.lstrip("# ") for c in comments(before)]
    assert "sets" in run(["dvc", "exp", "list", "--name-only"], root).stdout.split()  # DVC kept the experiment
