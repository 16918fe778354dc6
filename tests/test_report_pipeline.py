"""The evaluation branch end to end: `dvc repro` of two tiny variants through train_classifier, evaluate@,
sample@ and report, in a temporary repository fed by the loopback server; the page then opened in headless
Chromium at a laptop's 1280 px, as a reader sees it."""

import hashlib
import json
import re

import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import FAST_DOWNLOAD, write_zip
from helpers import ARTIFACTS, CHROMIUM_ARGS, chromium, git_commit_all, make_repo, run, tiny_evaluation

pytestmark = pytest.mark.e2e
VARIANTS = ("pattern_1010", "mnist_lsgan")  # two loss families: mse and lsgan


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
        p["variants"]["mnist_lsgan"]["data"]["limit"] = 512  # 4 steps an epoch: 40 steps are its 10 epochs
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
    mnist = json.loads((repo / "metrics/mnist_lsgan/eval.json").read_text())
    assert mnist["n_samples"] == 64 and 1 <= mnist["class_coverage"] <= 10 and mnist["fid_mnist"] > 0
    assert {"kid_mnist", "precision", "recall", "class_kl", "nn_memorization", "d_real_vs_ideal"} <= set(mnist)

    for v in VARIANTS:
        assert (repo / f"samples/{v}/progress/epoch_001.png").exists()  # train@'s, untouched
        assert {"grid.png", "progression.png"} <= {p.name for p in (repo / f"samples/{v}/sample").iterdir()}
    assert (repo / "samples/mnist_lsgan/sample/interpolation.png").exists()
    assert (repo / "samples/mnist_lsgan/sample/seeds.png").exists()

    md = (repo / "reports/all/report.md").read_text()
    for v in VARIANTS:
        assert re.search(rf"^\| {v} \|", md, re.M), v  # a row of the headline table
    assert "not in this params.yaml: " in md and "celeba_mlp" in md and "mnist_cgan" in md
    # every source claim with a verdict; these runs are 40 steps, not the sources' schedules
    assert re.search(r"^\| pattern_1010: pattern_mae \| 0\.05563 .*\| not comparable: the claim is about the end of "
                     r"the source's schedule; ours trained 40 steps = 0\.04 of the source's 10 epochs \|$", md, re.M)
    # 40 steps are mnist_lsgan's 10 epochs of its 512 images, but this MNIST is not the full one
    assert re.search(r"^\| mnist_lsgan: d_loss \| 0\.23 .*\| not comparable: the claim is about the end of the "
                     r"source's schedule; ours had 4000 of the full 60,000 mnist images \(data\.mnist\.train_rows\) "
                     r"\|$", md, re.M)
    assert re.search(r"^\| pattern_1010: seconds_per_image \| .*\| not comparable: ours timed 40 images only", md,
                     re.M)  # a 40-image run is mostly start-up: no verdict on its speed
    assert re.search(r"^\| theory: ideal_bce \| 0\.6931 .*\| holds: ", md, re.M)
    assert re.search(r"^\| mnist_vanilla: d_loss \| .* \| not run \| not measured: not run here \|$", md, re.M)
    assert "lsgan 0.125" in md  # the ideal line's words come from the same registry as its number
    html = (repo / "reports/all/report.html").read_text()
    assert "`" not in html.split("<body>")[1]  # no literal backticks on the page
    images = re.findall(r'<img src="([^"]+)"', html)
    assert {"img/mnist_lsgan/interpolation.png", "img/xy_game.png", "img/distances.png", "img/losses_mse.png",
            "img/losses_lsgan.png"} <= set(images)
    assert all((repo / "reports" / "all" / src).is_file() for src in images)
    assert mnist["fid_mnist_real"] < mnist["fid_mnist"]  # the chart's reference: real images score better
    page = in_the_browser(repo / "reports/all/report.html")
    assert page["scroll_width"] <= page["client_width"] == 1280, page  # no sideways scrolling on a laptop
    assert page["images"] == len(images) and not page["broken"], page
    assert page["charts"] >= 3 and page["details"] == len(VARIANTS) and page["headline_rows"] == len(VARIANTS)

    client = MlflowClient(f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ganlab")
    (report,) = [r for r in client.search_runs([exp.experiment_id]) if r.info.run_name == "report"]
    assert report.info.status == "FINISHED" and report.data.tags["dvc_stage"] == "report"
    assert report.data.metrics["mnist_lsgan.fid_mnist"] == pytest.approx(mnist["fid_mnist"])
    assert report.data.metrics["pattern_1010.pattern_mae"] == pytest.approx(pattern["pattern_mae"])
    assert {"report.md", "report.html", "img"} <= {f.path for f in client.list_artifacts(report.info.run_id)}
    # evaluate@ and sample@ wrote onto the training run that train.json names
    trained = client.get_run(json.loads((repo / "metrics/mnist_lsgan/train.json").read_text())["run_id"])
    assert trained.data.metrics["eval/fid_mnist"] == pytest.approx(mnist["fid_mnist"])
    assert trained.data.metrics["train/steps"] == 40
    images = {f.path.split("+")[0] for f in client.list_artifacts(trained.info.run_id, "images")}
    assert {"images/train~progress", "images/sample~grid", "images/sample~interpolation"} <= images

    assert "up to date" in run(["dvc", "status"], repo).stdout
    plots = json.loads(run(["dvc", "plots", "show", "--json"], repo).stdout)
    assert {f"plots/{v}/losses.csv" for v in VARIANTS} <= set(plots["data"])


def in_the_browser(report: "Path") -> dict:
    """The page in headless Chromium at 1280×800 with every <details> opened: its widths, its images (loaded:
    naturalWidth > 0), its charts; what a reader first sees goes to test-artifacts/report.png."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(report.as_uri(), wait_until="load")
        page.screenshot(path=str(ARTIFACTS / "report.png"))
        page.eval_on_selector_all("details", "ds => ds.forEach(d => d.open = true)")
        page.wait_for_function("[...document.images].every(i => i.complete)")
        found = page.evaluate("""() => ({
            scroll_width: document.documentElement.scrollWidth, client_width: document.documentElement.clientWidth,
            images: document.images.length,
            broken: [...document.images].filter(i => !(i.naturalWidth > 0)).map(i => i.src),
            charts: [...document.querySelectorAll("figure.chart img")].filter(i => i.naturalWidth > 300).length,
            details: document.querySelectorAll("details").length,
            headline_rows: document.querySelectorAll("#headline tr").length - 1})""")
        browser.close()
    return found
