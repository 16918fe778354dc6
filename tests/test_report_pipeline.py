"""The evaluation branch end to end: `dvc repro` of two tiny variants through train_classifier, evaluate@, sample@
and report, in a temporary repository fed by the loopback server."""

import hashlib
import json
import re

import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import FAST_DOWNLOAD, write_zip
from helpers import git_commit_all, make_repo, run, tiny_evaluation

pytestmark = pytest.mark.e2e
VARIANTS = ("pattern_1010", "mnist_mlp_first")


@pytest.fixture
def repo(tmp_path, http_server, mnist_csv, celeba_jpegs):
    http_server.files["/mnist_train.csv"] = mnist_csv.train_csv
    http_server.files["/mnist_test.csv"] = mnist_csv.test_csv
    zip_bytes = write_zip(tmp_path / "celeba.zip", dict(list(celeba_jpegs.items())[:8])).read_bytes()
    http_server.files["/img_align_celeba.zip"] = zip_bytes

    def edit(p):
        p["data"]["mnist"].update(train_url=http_server.url("/mnist_train.csv"), train_rows=4000,
                                  test_url=http_server.url("/mnist_test.csv"), test_rows=1000)
        p["data"]["celeba"].update(url=http_server.url("/img_align_celeba.zip"), n_images=8, size=len(zip_bytes),
                                   md5=hashlib.md5(zip_bytes).hexdigest())
        p["data"]["download"].update(FAST_DOWNLOAD)
        p["variants"] = {k: p["variants"][k] for k in VARIANTS}
        p["train"].update(max_steps=40, log_every=5, checkpoint_every=20)
        tiny_evaluation(p)
    root = make_repo(tmp_path / "repo", edit)
    git_commit_all(root)
    return root


def test_repro_builds_the_report_of_the_variants_that_ran(repo):
    run(["dvc", "repro"], repo)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert {"train_classifier", "report", *(f"{s}@{v}" for s in ("evaluate", "sample") for v in VARIANTS)} <= \
        set(lock["stages"])
    assert set(lock["stages"]["evaluate@pattern_1010"]["params"]["params.yaml"]) == {"variants.pattern_1010", "model",
                                                                                     "eval"}
    clf = json.loads((repo / "metrics/classifier.json").read_text())
    assert clf["n_train"] == 1000 and 0 < clf["cnn"]["test_accuracy"] <= 1

    pattern = json.loads((repo / "metrics/pattern_1010/eval.json").read_text())
    assert len(pattern["pattern"]) == 4 and pattern["ideal"] == 0.25 and pattern["loss"] == "mse"
    mnist = json.loads((repo / "metrics/mnist_mlp_first/eval.json").read_text())
    assert mnist["n_samples"] == 64 and 1 <= mnist["class_coverage"] <= 10 and mnist["fid_mnist"] > 0
    assert {"kid_mnist", "precision", "recall", "class_kl", "nn_memorization", "d_real_vs_ideal"} <= set(mnist)

    for v in VARIANTS:
        assert (repo / f"samples/{v}/progress/epoch_001.png").exists()  # train@'s, untouched
        assert {"grid.png", "progression.png"} <= {p.name for p in (repo / f"samples/{v}/sample").iterdir()}
    assert (repo / "samples/mnist_mlp_first/sample/interpolation.png").exists()
    assert (repo / "samples/mnist_mlp_first/sample/seeds.png").exists()

    md = (repo / "reports/all/report.md").read_text()
    for v in VARIANTS:
        assert re.search(rf"^\| {v} \|", md, re.M), v  # a row of the table of all variants
    assert "Not in this params.yaml at all: " in md and "celeba_mlp" in md and "mnist_cgan" in md
    html = (repo / "reports/all/report.html").read_text()
    images = re.findall(r"<img src='([^']+)'", html)
    assert "img/mnist_mlp_first/interpolation.png" in images and "img/xy_game.png" in images
    assert all((repo / "reports" / "all" / src).is_file() for src in images)

    client = MlflowClient(f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ganlab")
    (report,) = [r for r in client.search_runs([exp.experiment_id]) if r.info.run_name == "report"]
    assert report.info.status == "FINISHED" and report.data.tags["dvc_stage"] == "report"
    assert report.data.metrics["mnist_mlp_first.fid_mnist"] == pytest.approx(mnist["fid_mnist"])
    assert report.data.metrics["pattern_1010.pattern_mae"] == pytest.approx(pattern["pattern_mae"])
    assert {"report.md", "report.html", "img"} <= {f.path for f in client.list_artifacts(report.info.run_id)}

    assert "up to date" in run(["dvc", "status"], repo).stdout
    plots = json.loads(run(["dvc", "plots", "show", "--json"], repo).stdout)
    assert {f"plots/{v}/losses.csv" for v in VARIANTS} <= set(plots["data"])
