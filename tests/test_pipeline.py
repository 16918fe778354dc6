"""The real pipeline, end to end: `dvc repro`, `dvc exp run -S`, DVC's queue, on tiny data from a loopback server."""

import hashlib
import json
import time

import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import FAST_DOWNLOAD, write_zip
from helpers import git_commit_all, make_repo, run, tiny_evaluation

pytestmark = pytest.mark.e2e
VARIANTS = ("pattern_1010", "mnist_mlp_first")


@pytest.fixture
def pipeline(tmp_path, http_server, mnist_csv, celeba_jpegs):
    """A factory: a git + DVC repository of the project whose params fetch from the loopback server and train
    the given variants for a few steps."""
    http_server.files["/mnist_train.csv"] = mnist_csv.train_csv
    http_server.files["/mnist_test.csv"] = mnist_csv.test_csv
    zip_bytes = write_zip(tmp_path / "celeba.zip", dict(list(celeba_jpegs.items())[:8])).read_bytes()
    http_server.files["/img_align_celeba.zip"] = zip_bytes

    def make(variants, **train):
        def edit(p):
            p["data"]["mnist"].update(train_url=http_server.url("/mnist_train.csv"), train_rows=4000,
                                      test_url=http_server.url("/mnist_test.csv"), test_rows=1000)
            p["data"]["celeba"].update(url=http_server.url("/img_align_celeba.zip"), n_images=8,
                                       size=len(zip_bytes), md5=hashlib.md5(zip_bytes).hexdigest())
            p["data"]["download"].update(FAST_DOWNLOAD)
            p["variants"] = {k: p["variants"][k] for k in variants}
            p["train"].update(train)
            tiny_evaluation(p)
        root = make_repo(tmp_path / "repo", edit)
        git_commit_all(root)
        return root
    return make


@pytest.fixture
def repo(pipeline):
    return pipeline(VARIANTS, max_steps=40, log_every=5, checkpoint_every=20)


def mlflow_runs(root):
    """The training runs (stage report logs a run of its own)."""
    client = MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ganlab")
    runs = client.search_runs([exp.experiment_id]) if exp else []
    return [r for r in runs if r.data.tags.get("dvc_stage") != "report"]


def exp_rows(root):
    """`dvc exp show --json` flattened to (name, params.yaml params, metrics by file) per experiment."""
    rows = []
    for base in json.loads(run(["dvc", "exp", "show", "--json"], root).stdout):
        for entry in [base] + [r for e in base.get("experiments") or [] for r in e["revs"]]:
            data = entry.get("data") or {}
            params = data.get("params", {}).get("params.yaml", {}).get("data", {})
            metrics = {k: v.get("data", {}) for k, v in data.get("metrics", {}).items()}
            rows.append((entry.get("name") or entry.get("rev"), params, metrics))
    return rows


def test_repro_an_ablation_and_queued_experiments(repo):
    """What a user types, in order: `dvc repro`, an ablation with `dvc exp run -S`, two queued experiments run two
    at a time (each in its own copy under .dvc/tmp/exps, logging to the main store), and a bad value."""
    run(["dvc", "repro"], repo)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"download_mnist", "download_celeba", "pack_celeba", "make_toy", "train_classifier",
                                   "report", *(f"{s}@{v}" for s in ("train", "evaluate", "sample") for v in VARIANTS)}
    # each train stage depends on its own variant's params and the overrides, not on the others'
    assert set(lock["stages"]["train@pattern_1010"]["params"]["params.yaml"]) == {"variants.pattern_1010", "model",
                                                                                  "train"}
    runs = mlflow_runs(repo)
    assert sorted(r.info.run_name for r in runs) == sorted(VARIANTS)
    assert all(r.info.status == "FINISHED" and r.data.params["model.loss"] == "mse" for r in runs)
    for v in VARIANTS:
        m = json.loads((repo / f"metrics/{v}/train.json").read_text())
        assert m["steps"] == 40 and m["run_id"] in {r.info.run_id for r in runs}
        assert (repo / f"models/{v}/generator.pt").exists() and (repo / f"plots/{v}/losses.csv").exists()
    git_commit_all(repo, "baseline")
    assert "up to date" in run(["dvc", "status"], repo).stdout

    run(["dvc", "exp", "run", "-S", "model.loss=bce"], repo)
    rows = exp_rows(repo)
    (exp,) = [r for r in rows if r[1].get("model", {}).get("loss") == "bce" and r[0] != "workspace"]
    assert {f"metrics/{v}/train.json" for v in VARIANTS} <= set(exp[2])
    assert all(exp[2][f"metrics/{v}/train.json"]["steps"] == 40 for v in VARIANTS)
    bce = [r for r in mlflow_runs(repo) if r.data.params["model.loss"] == "bce"]
    assert sorted(r.data.tags["variant"] for r in bce) == sorted(VARIANTS)
    assert all(r.data.tags["dvc_exp_name"] == exp[0] and exp[0] in r.info.run_name for r in bce)
    plots = json.loads(run(["dvc", "plots", "show", "--json"], repo).stdout)
    assert {f"plots/{v}/losses.csv" for v in VARIANTS} <= set(plots["data"])

    for seed in (1, 2):
        run(["dvc", "exp", "run", "--queue", "-S", f"train.seed={seed}"], repo)
    run(["dvc", "queue", "start", "-j", "2"], repo)
    deadline = time.time() + 400
    while time.time() < deadline:
        status = run(["dvc", "queue", "status"], repo).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(2)
    assert status.count("Success") == 2, status
    queued = [r for r in mlflow_runs(repo) if r.data.params["train.seed"] in ("1", "2")]
    assert len(queued) == 4 and all(r.info.status == "FINISHED" and r.data.tags["dvc_exp_name"] for r in queued)
    assert sorted(r.data.params["train.seed"] for r in queued) == ["1", "1", "2", "2"]
    assert not list((repo / ".dvc" / "tmp" / "exps").rglob("mlflow.db"))  # nothing went to the copies

    bad = run(["dvc", "exp", "run", "-S", "model.loss=foo"], repo, check=False)
    assert bad.returncode != 0
    out = bad.stdout + bad.stderr
    assert "model.loss = 'foo'" in out and "'bce', 'mse', 'lsgan', 'wgan_gp' or 'hinge'" in out
    assert "epoch 1/" not in out  # it failed before any training


def test_celeba_branch(pipeline):
    """Every CelebA variant through `dvc repro` on 8 generated faces packed by the real stages."""
    celeba = ("celeba_mlp", "celeba_cnn", "celeba_cnn_gelu", "celeba_dcgan", "celeba_wgan_gp")
    repo = pipeline(celeba, max_steps=2, batch_size=2, log_every=1)
    run(["dvc", "repro"], repo)
    runs = {r.info.run_name: r for r in mlflow_runs(repo)}
    assert set(runs) == set(celeba) and all(r.info.status == "FINISHED" for r in runs.values())
    for v in celeba:
        m = json.loads((repo / f"metrics/{v}/train.json").read_text())
        assert m["steps"] == 2 and m["run_id"] == runs[v].info.run_id
        assert (repo / f"models/{v}/generator.pt").exists()
        assert (repo / f"samples/{v}/progress/epoch_001.png").exists()
    assert runs["celeba_dcgan"].data.params["train.seed"] == "999"
