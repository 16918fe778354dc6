"""The MLflow UI on ganlab's store, driven in headless Chromium the way a newcomer clicks: from the experiment list
to the training runs (the model-training view, not the GenAI overview), the runs table sorted by eval/fid_mnist,
a run's scores and params, and its image view sliding over the training steps.

Needs Chromium (Debian package `chromium`; `make test` installs it when it runs as root). Without it this test
fails and says so: it is never skipped. Screenshots go to test-artifacts/.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from mlflow.tracking import MlflowClient

from ganlab.config import TrackingCfg
from ganlab.tracking.store import runs_table_url
from helpers import (ARTIFACTS, CHROMIUM_ARGS, chromium, env, free_port, stage_in_process, tiny_evaluation,
                     write_mnist_h5, write_params)

pytestmark = pytest.mark.e2e
VARIANTS = ("mnist_vanilla", "mnist_lsgan")


def stage(cwd, script, *args):
    assert stage_in_process(script, [*args, "--params", "params.yaml"], cwd) == 0, f"{script} {args} failed"


@pytest.fixture
def ui(tmp_path, monkeypatch):
    """Two tiny variants trained (3 epochs of 4 steps: a grid per epoch), evaluated and sampled in tmp_path's store,
    and `mlflow ui` serving it on a free loopback port."""
    data = str(tmp_path / "data")
    write_mnist_h5(tmp_path / "data" / "mnist.h5")

    def edit(p):
        p["train"].update(log_every=2, device="cpu")
        for name in VARIANTS:
            p["variants"][name]["data"]["limit"] = 512
            p["variants"][name]["train"]["epochs"] = 3
        tiny_evaluation(p)
        p["classifier"]["device"] = "cpu"
    write_params(tmp_path / "params.yaml", edit)
    for var in ("DVC_ROOT", "MLFLOW_TRACKING_URI", "DVC_EXP_NAME"):  # the store: tmp_path/mlruns
        monkeypatch.delenv(var, raising=False)
    for name in VARIANTS:
        stage(tmp_path, "train.py", name, "--data-dir", data)
    stage(tmp_path, "train_classifier.py", "--data-dir", data)
    for name in VARIANTS:
        stage(tmp_path, "evaluate.py", name, "--data-dir", data)
    stage(tmp_path, "sample.py", "mnist_lsgan", "--data-dir", data)
    port, store = free_port(), f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", store,
                               "--host", "127.0.0.1", "--port", str(port)],
                              env={**env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)  # its own process group: uvicorn and its workers
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.3)
        else:
            pytest.fail("mlflow ui did not answer on /health within 90 s")
        yield url, MlflowClient(store), store
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # `mlflow ui` and the uvicorn workers it started
        server.wait(timeout=30)


def test_a_newcomer_finds_the_runs_sorted_by_quality_and_their_pictures(ui):
    from playwright.sync_api import sync_playwright

    url, client, store = ui
    exp = client.get_experiment_by_name("ganlab")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == set(VARIANTS)
    fid = {name: r.data.metrics["eval/fid_mnist"] for name, r in runs.items()}  # evaluate@ wrote onto the run
    best = min(fid, key=fid.get)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        # The experiment list, as `mlflow ui` opens. MLflow 3.17 starts every visitor in its GenAI mode; the
        # README says to click "Model training" first (the link `make ui` prints does it).
        # `make ui`'s link goes straight to the runs table
        page.goto(runs_table_url(url, TrackingCfg(uri=store)), wait_until="load")
        page.get_by_text("mnist_lsgan", exact=True).first.wait_for(timeout=60_000)
        assert "Run Name" in page.inner_text("body")
        page.goto(f"{url}/", wait_until="load")
        page.get_by_text("Model training", exact=True).first.click()
        page.get_by_role("link", name="ganlab").first.click()
        page.get_by_text("mnist_lsgan", exact=True).first.wait_for(timeout=60_000)
        assert re.search(rf"#/experiments/{exp.experiment_id}/runs\?.*workflowType=machine_learning", page.url)
        body = page.inner_text("body")
        assert "Run Name" in body and "Token Usage" not in body and "Detect Issues" not in body  # not GenAI

        # Sort: eval/fid_mnist, ascending (lower is better), and show it as a column
        page.get_by_text("Sort:").first.click()
        page.get_by_placeholder("Search").last.fill("eval/fid_mnist")
        page.get_by_text("eval/fid_mnist", exact=True).last.click()
        page.get_by_text("Sort:").first.click()
        page.get_by_test_id("sort-select-asc").click()
        page.wait_for_url(re.compile(r".*orderByKey=metrics\.%60eval%2Ffid_mnist%60&orderByAsc=true.*"))
        page.get_by_text("Columns").first.click()  # the scores on, the empty attribute columns off
        for column in ("eval/fid_mnist", "eval/kid_mnist", "eval/class_coverage", "train/images_seen", "Dataset",
                       "Source", "Models"):
            page.get_by_placeholder("Search columns").fill(column)
            page.get_by_text(column, exact=True).last.click()
        page.keyboard.press("Escape")
        page.get_by_role("button", name="Close", exact=True).first.click()  # the assistant's side panel
        expected = sorted(VARIANTS, key=fid.get)
        # rows in the order the grid shows them (it moves rows by their aria-rowindex, not in the DOM)
        page.wait_for_function("""names => { const shown = [...document.querySelectorAll('[role=row]')]
            .map(r => [Number(r.getAttribute('aria-rowindex')), r.innerText.split('\\n').find(t => names.includes(t))])
            .filter(([i, n]) => n).sort((a, b) => a[0] - b[0]).map(([i, n]) => n);
            return JSON.stringify(shown) === JSON.stringify(names); }""", arg=expected, timeout=30_000)
        page.locator("[role=columnheader]", has_text="eval/fid_mnist").first.wait_for(timeout=30_000)  # shown
        page.screenshot(path=str(ARTIFACTS / "mlflow_ui_runs.png"))

        # The best run: its scores and params, then its image view
        page.get_by_text(best, exact=True).first.click()
        page.get_by_text("eval/fid_mnist", exact=True).first.wait_for(timeout=60_000)
        text = page.inner_text("body")
        page.screenshot(path=str(ARTIFACTS / "mlflow_ui_run.png"), full_page=True)
        page.get_by_text("Model metrics", exact=True).first.click()
        page.get_by_placeholder("Search metric charts").fill("progress")
        page.get_by_text("train/progress", exact=True).first.wait_for(timeout=60_000)
        page.evaluate("""() => {  // the card's full-screen button: the one without a test id
            const title = [...document.querySelectorAll('*')].find(e => e.childElementCount === 0 &&
                                                                        e.textContent === 'train/progress');
            let card = title; while (!card.querySelector('[role=slider]')) card = card.parentElement;
            [...card.querySelectorAll('button')].find(b => !b.getAttribute('data-testid')).click(); }""")
        slider = page.get_by_role("dialog").get_by_role("slider").first
        slider.wait_for(timeout=30_000)
        steps = (slider.get_attribute("aria-valuemin"), slider.get_attribute("aria-valuemax"))
        slider.focus()
        for _ in range(10):  # step by step to the last epoch's grid
            if slider.get_attribute("aria-valuenow") == steps[1]:
                break
            page.keyboard.press("ArrowRight")
        page.wait_for_function("[...document.querySelectorAll('[role=dialog] img')].some(i => i.naturalWidth > 0 &&"
                               " i.src.includes('train~progress'))", timeout=30_000)
        shown_step = slider.get_attribute("aria-valuenow")
        page.screenshot(path=str(ARTIFACTS / "mlflow_ui_images.png"))
        browser.close()
    # the run page: its param and its scores, as the run holds them
    assert f"model.loss\n{'lsgan' if best == 'mnist_lsgan' else 'bce'}" in text
    assert f"train/images_seen\n{3 * 4 * 128}" in text and "train/steps\n12" in text
    # the image slider runs over the steps a grid was logged at: 0 (untrained), then each epoch's end
    assert steps == ("0", "12") and shown_step == "12"
    history = {f.path.split("+")[2] for f in client.list_artifacts(runs[best].info.run_id, "images")
               if f.path.startswith("images/train~progress+step+") and f.path.endswith(".png")}
    assert history == {"0", "4", "8", "12"}
