"""`ganlab ui` (what `make ui` runs): MLflow's UI opens at its root URL in model-training mode and stays there
as a user clicks through to a run, in real Chromium. A store with one small run is enough (no training here; the
full walk over trained runs is tests/test_mlflow_ui.py). Screenshots go to test-artifacts/."""

import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from helpers import ARTIFACTS, CHROMIUM_ARGS, chromium, env, free_port, write_params

pytestmark = pytest.mark.e2e
GENAI = ("Token Usage", "Detect Issues", "Evaluation runs", "Evaluations", "Ask a question")  # GenAI pages, assistant


@pytest.fixture
def server(tmp_path):
    write_params(tmp_path / "params.yaml")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    exp = client.create_experiment("ganlab", tags={"mlflow.experimentKind": "custom_model_development"})
    run = client.create_run(exp, run_name="mnist_vanilla")
    for step in (10, 20, 30):
        client.log_metric(run.info.run_id, "train/d_loss", 1.0 / step, step=step)
    client.log_param(run.info.run_id, "model.loss", "bce")
    for i in range(60):  # a training run's many params: MLflow's default image caption lists them all
        client.log_param(run.info.run_id, f"train.p{i:02d}", i)
    from PIL import Image

    for step in (0, 10, 20, 30):  # as train@ and sample@ log them
        client.log_image(run.info.run_id, Image.new("L", (28, 28), step * 8), key="train/progress", step=step,
                         synchronous=True)
    client.log_image(run.info.run_id, Image.new("L", (28, 28), 200), key="sample/grid", step=30, synchronous=True)
    for key, value in (("eval/fid_mnist", 162.8), ("eval/class_coverage", 10), ("eval/kid_mnist", 3.0)):
        client.log_metric(run.info.run_id, key, value, step=30)  # what evaluate@ writes onto the training run
    client.set_terminated(run.info.run_id)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ganlab.cli", "ui", "--port", str(port)], cwd=tmp_path,
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline and proc.poll() is None:
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.3)
        else:
            pytest.fail(f"ganlab ui did not answer on /health: {proc.stderr.read() if proc.poll() else 'timeout'}")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_the_root_url_opens_in_model_training_mode_and_a_run_keeps_it(server):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{server}/", wait_until="load")  # the root URL, as `mlflow ui` prints it
        page.get_by_role("link", name="ganlab").first.click()
        page.get_by_text("mnist_vanilla", exact=True).first.wait_for(timeout=60_000)
        for column in ("eval/fid_mnist", "eval/kid_mnist", "eval/class_coverage", "model.loss"):  # no clicks
            page.locator("[role=columnheader]", has_text=column).first.wait_for(timeout=30_000)
        page.get_by_text("162.8", exact=True).first.wait_for(timeout=30_000)  # the run's FID, in its row
        body = page.inner_text("body")
        page.screenshot(path=str(ARTIFACTS / "ganlab_ui_runs.png"))
        assert "Run Name" in body and not [w for w in GENAI if w in body], body[:2000]
        page.get_by_text("mnist_vanilla", exact=True).first.click()  # the run page
        page.get_by_text("Model metrics", exact=True).first.wait_for(timeout=60_000)
        body = page.inner_text("body")
        page.screenshot(path=str(ARTIFACTS / "ganlab_ui_run.png"))
        stored = page.evaluate("localStorage.getItem('mlflow.workflowType_v1')")
        page.get_by_text("Model metrics", exact=True).first.click()  # the charts: curves and pictures first
        page.get_by_text("d_loss", exact=True).first.wait_for(timeout=60_000)
        page.wait_for_function("[...document.querySelectorAll('img')].some(i => i.naturalWidth > 0 &&"
                               " i.src.includes('train~progress'))", timeout=30_000)
        charts = page.inner_text("body")  # the first screen (MLflow draws a card when it scrolls into view)
        page.screenshot(path=str(ARTIFACTS / "ganlab_ui_run_charts.png"))
        page.get_by_text("eval", exact=True).first.scroll_into_view_if_needed()
        page.get_by_text("fid_mnist", exact=True).first.wait_for(timeout=30_000)  # the scores: last
        page.reload(wait_until="load")  # MLflow stored its state on the first visit: it is read back as stored
        page.get_by_text("Model metrics", exact=True).first.click()
        page.get_by_text("eval", exact=True).first.scroll_into_view_if_needed(timeout=60_000)
        page.get_by_text("fid_mnist", exact=True).first.wait_for(timeout=30_000)
        again = page.inner_text("body")
        browser.close()
    assert stored == '"machine_learning"'
    assert not [w for w in GENAI if w in body], body[:2000]
    # the sections in the pipeline's order: training (curves, the grids), the sample stage's pictures, the scores
    lines = charts.split("\n")
    sections = [lines.index(s) for s in ("train", "sample", "eval")]
    assert sections == sorted(sections), charts[:3000]
    assert sections[0] < lines.index("d_loss") < sections[1]
    assert "train/progress" in lines[sections[0]:sections[1]] and "sample/grid" in lines[sections[1]:sections[2]]
    # the image cards: the picture and the run's name, not its 61 params
    assert "train.p00" not in charts and "train.p59" not in charts, charts[:3000]
    assert [line for line in again.split("\n") if line in ("train", "sample", "eval")] == ["train", "sample", "eval"]


def test_the_runs_table_columns_are_the_headline_scores():
    """The columns `ganlab ui` shows by default are the eval/ scores the headline numbers take, all of them."""
    from ganlab.evaluation.evaluate import HEADLINE
    from ganlab.tracking.ui import COLUMNS, SCORES, view_key

    quality = [s for key, sources in HEADLINE.items() if key not in ("d", "g", "steps", "img_s") for s in sources]
    assert list(SCORES) == quality
    assert COLUMNS[2:] == [f"metrics.`eval/{s}`" for s in quality]
    assert view_key("7") == 'MLflowLocalStorage-1.1-ExperimentPage-["7"]-ReactComponentState'
