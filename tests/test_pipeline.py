"""The real pipeline, end to end: `dvc repro`, `dvc exp run -S`, DVC's queue, on tiny data from a loopback server."""

import hashlib
import json

import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import FAST_DOWNLOAD, write_zip
from ganlab.config import load_params
from helpers import assert_trained, git_commit_all, make_repo, run, tiny_evaluation

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

    def make(variants, celeba_url=None, **train):
        def edit(p):
            p["data"]["mnist"].update(train_url=http_server.url("/mnist_train.csv"), train_rows=4000,
                                      test_url=http_server.url("/mnist_test.csv"), test_rows=1000)
            p["data"]["celeba"].update(url=celeba_url or http_server.url("/img_align_celeba.zip"), n_images=8,
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
    """The curriculum variants plus a CelebA one on a machine where CelebA cannot be had (its URL refuses)."""
    return pipeline((*VARIANTS, "celeba_cnn"), celeba_url="http://127.0.0.1:9/img_align_celeba.zip", max_steps=40,
                    log_every=5, checkpoint_every=20)


def mlflow_runs(root):
    """The training runs (stage report logs a run of its own)."""
    client = MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ganlab")
    runs = client.search_runs([exp.experiment_id]) if exp else []
    return [r for r in runs if not r.data.tags.get("dvc_stage", "").startswith("report")]


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


def outputs(root, variants):
    """The bytes of every result a user keeps: models, metrics, loss logs, headline numbers."""
    files = [f for v in variants for f in (*(root / "models" / v).glob("*.pt"), root / f"metrics/{v}/train.json",
                                           root / f"metrics/{v}/eval.json", root / f"plots/{v}/losses.csv")]
    files += list((root / "metrics" / "headline").rglob("*.json"))
    return {str(f.relative_to(root)): f.read_bytes() for f in files}


def changed_stages(root, *targets):
    """Stage names `dvc status` reports as changed (for the given targets)."""
    return set(json.loads(run(["dvc", "status", "--json", "--with-deps", *targets], root).stdout))


def test_scoped_repro_and_ablation(repo):
    """What a user types, in order, on a machine without CelebA: the MNIST/toy curriculum with its report, edits
    that rerun only what reads them, a refused value that loses nothing, and an ablation with `dvc exp run -S`.
    (DVC's queue: conftest's gaussian_experiments queues two experiments, test_compare checks what they logged;
    test_queue_offline queues with the data server gone.)"""
    run(["dvc", "repro", "report_curriculum"], repo)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"check_params", "download_mnist", "make_toy", "train_classifier",
                                   "report_curriculum", *(f"{s}@{v}" for s in ("train", "evaluate", "sample")
                                                          for v in VARIANTS)}  # no CelebA stage ran
    md = (repo / "reports/curriculum/report.md").read_text()
    assert "celeba_cnn" in md and "without metrics" in md  # configured, named as missing
    # each train stage depends on its own variant's params and the overrides, not on the others'
    assert set(lock["stages"]["train@pattern_1010"]["params"]["params.yaml"]) == {"variants.pattern_1010", "model",
                                                                                  "train"}
    runs = mlflow_runs(repo)
    assert sorted(r.info.run_name for r in runs) == sorted(VARIANTS)
    assert all(r.info.status == "FINISHED" and r.data.params["model.loss"] == "mse" for r in runs)
    for v in VARIANTS:
        m = json.loads((repo / f"metrics/{v}/train.json").read_text())
        assert m["steps"] == 40 and m["run_id"] in {r.info.run_id for r in runs}
        assert m["config"]["model"]["loss"] == "mse" and m["overrides"]["train.max_steps"] == 40
        assert (repo / f"models/{v}/generator.pt").exists() and (repo / f"plots/{v}/losses.csv").exists()
    git_commit_all(repo, "baseline")
    assert changed_stages(repo, "report_curriculum") == set()  # editing nothing reruns nothing

    # an edit reruns what imports the edited module, and only that
    report_py, loss_py = repo / "src/ganlab/report/report.py", repo / "src/ganlab/engine/losses.py"
    for path in (report_py, loss_py):
        path.write_text(path.read_text() + "\n# an edit\n")
    assert changed_stages(repo, "report_curriculum") >= {"report_curriculum", *(f"train@{v}" for v in VARIANTS)}
    assert not changed_stages(repo, "report_curriculum") & {"check_params", "download_mnist", "make_toy"}
    run(["git", "checkout", "src"], repo)
    report_py.write_text(report_py.read_text() + "\n# an edit\n")
    assert changed_stages(repo, "report_curriculum") == {"report_curriculum"}
    run(["git", "checkout", "src"], repo)

    # a refused value stops before any stage removes its outputs: the last good results stay as they were
    before = outputs(repo, VARIANTS)
    for bad in ("train.lr_g=-1", "model.loss=foo"):
        proc = run(["dvc", "exp", "run", "-S", bad, "report_curriculum"], repo, check=False)
        assert proc.returncode != 0
        out = proc.stdout + proc.stderr
        assert "check_params: error" in out and "epoch 1/" not in out
        assert outputs(repo, VARIANTS) == before
        run(["git", "checkout", "params.yaml"], repo)
    assert "'bce', 'mse', 'lsgan', 'wgan_gp' or 'hinge'" in out

    # the ablation up to the scores that `dvc exp show` compares (the report of an experiment is the same stage the
    # baseline ran above, and the queued experiments below run in DVC's copies)
    run(["dvc", "exp", "run", "-S", "model.loss=bce", *(f"evaluate@{v}" for v in VARIANTS)], repo)
    rows = exp_rows(repo)
    (exp,) = [r for r in rows if r[1].get("model", {}).get("loss") == "bce" and r[0] != "workspace"]
    headline = {"pattern_1010": "metrics/headline/pattern_1010/pattern_1010.json",
                "mnist_mlp_first": "metrics/headline/mnist/mnist_mlp_first.json"}
    assert set(headline.values()) <= set(exp[2]) and all(exp[2][f][v]["steps"] == 40 for v, f in headline.items())
    assert {"fid", "cover", "d", "g", "img_s"} <= set(exp[2][headline["mnist_mlp_first"]]["mnist_mlp_first"])
    assert {"err", "d", "g"} <= set(exp[2][headline["pattern_1010"]]["pattern_1010"])
    bce = [r for r in mlflow_runs(repo) if r.data.params["model.loss"] == "bce"]
    assert sorted(r.data.tags["variant"] for r in bce) == sorted(VARIANTS)
    assert all(r.data.tags["dvc_exp_name"] == exp[0] and exp[0] in r.info.run_name for r in bce)
    assert all(r.data.tags["override.model.loss"] == "bce" and "model.loss" in r.data.tags["overridden"] for r in bce)
    plots = json.loads(run(["dvc", "plots", "show", "--json"], repo).stdout)
    assert {f"plots/{v}/losses.csv" for v in VARIANTS} <= set(plots["data"])



def test_celeba_branch(pipeline):
    """Every CelebA variant through `dvc repro` on 8 generated faces packed by the real stages (the suite's one
    training of these networks: test_engine's stage smoke test leaves them to this one)."""
    celeba = ("celeba_mlp", "celeba_cnn", "celeba_cnn_gelu", "celeba_dcgan", "celeba_wgan_gp")
    repo = pipeline(celeba, max_steps=2, batch_size=2, log_every=1, grid_size=4)  # a 2x2 grid: the same code
    run(["dvc", "repro", "report"], repo)  # the report of everything: every CelebA stage, the evaluator, the data
    runs = {r.info.run_name: r for r in mlflow_runs(repo)}
    assert set(runs) == set(celeba) and all(r.info.status == "FINISHED" for r in runs.values())
    params = load_params(repo / "params.yaml")
    for v in celeba:
        assert json.loads((repo / f"metrics/{v}/train.json").read_text())["run_id"] == runs[v].info.run_id
        assert_trained(repo, v, params.variant(v), steps=2, batch_size=2)
        assert (repo / f"samples/{v}/progress/epoch_001.png").exists()
    assert runs["celeba_dcgan"].data.params["train.seed"] == "999"
