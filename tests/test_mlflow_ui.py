"""The MLflow UI on ganlab's store, opened in headless Chromium: the runs, a param and a metric are on the page.

Needs Chromium (Debian package `chromium`; `make test` installs it when it runs as root). Without it this test
fails and says so: it is never skipped. Screenshots go to test-artifacts/.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from mlflow.tracking import MlflowClient

from helpers import CHROMIUM_ARGS, REPO, chromium, env, run, write_mnist_h5, write_params

pytestmark = pytest.mark.e2e
ARTIFACTS = REPO / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ui(tmp_path):
    """Two tiny trained variants in tmp_path's store, and `mlflow ui` serving it on a free loopback port."""
    write_mnist_h5(tmp_path / "data" / "mnist.h5")
    write_params(tmp_path / "params.yaml", lambda p: p["train"].update(max_steps=30, log_every=5, device="cpu"))
    for name in ("mnist_vanilla", "mnist_lsgan"):
        run([sys.executable, str(REPO / "stages/train.py"), name, "--data-dir", str(tmp_path / "data")], tmp_path)
    port, store = free_port(), f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", store,
                               "--host", "127.0.0.1", "--port", str(port)], env=env(), cwd=tmp_path,
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
        yield url, MlflowClient(store)
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # `mlflow ui` and the uvicorn workers it started
        server.wait(timeout=30)


def test_runs_params_and_metrics_in_the_browser(ui):
    from playwright.sync_api import sync_playwright

    url, client = ui
    exp = client.get_experiment_by_name("ganlab")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"mnist_vanilla", "mnist_lsgan"}
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1100})
        page.goto(f"{url}/#/experiments/{exp.experiment_id}/runs", wait_until="load")
        for name in runs:
            page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "mlflow_ui_runs.png"))

        run_ = runs["mnist_lsgan"]
        page.goto(f"{url}/#/experiments/{exp.experiment_id}/runs/{run_.info.run_id}", wait_until="load")
        page.get_by_text("model.loss", exact=True).wait_for(timeout=60_000)
        text = page.inner_text("body")
        page.screenshot(path=str(ARTIFACTS / "mlflow_ui_run.png"), full_page=True)
        browser.close()
    # the param and its value, a metric and its value, as the run holds them
    assert "model.loss\nlsgan" in text and "train.lr_d\n0.001" in text
    assert f"images_seen\n{30 * 128}" in text and "steps\n30" in text
    # the server also hands out the run's artifacts (the per-epoch grid, the generator)
    listed = requests.get(f"{url}/ajax-api/2.0/mlflow/artifacts/list",
                          params={"run_id": run_.info.run_id, "path": "grids"}, timeout=30).json()
    assert [f["path"] for f in listed["files"]] == ["grids/epoch_001.png"]
