"""Working as a team, for real: the lab's MLflow server (PostgreSQL + S3 artifacts, basic auth), a DVC S3 remote on
the same object store, and experiments shared through a git remote, as docs/team.md has them."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import boto3
import psycopg
import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ganlab.tracking.ui import COLUMNS, view_key
from helpers import ARTIFACTS, CHROMIUM_ARGS, chromium, git_commit_all, make_repo

pytestmark = pytest.mark.e2e
VARIANT = "gaussian_2d"
EXPERIMENT = "team"


def sh(cmd: list[str], cwd: Path, lab, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=lab.run_env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lab_secrets(lab) -> dict[str, str]:
    return dict(line.split("=", 1) for line in (lab.dir / "secrets.env").read_text().splitlines()
                if "=" in line and not line.startswith("#"))


def s3(lab):
    return boto3.client("s3", endpoint_url=lab.client["AWS_ENDPOINT_URL_S3"], region_name="us-east-1",
                        aws_access_key_id=lab.client["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=lab.client["AWS_SECRET_ACCESS_KEY"])


@pytest.fixture
def client(lab, monkeypatch):
    """An MLflow client of the lab's server, with the credentials a teammate exports."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", lab.client["MLFLOW_TRACKING_USERNAME"])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", lab.client["MLFLOW_TRACKING_PASSWORD"])
    return MlflowClient(lab.uri)


@pytest.fixture(scope="module")
def team(tmp_path_factory, lab):
    """Alice's repository of the project (one toy variant, a few steps), logging to the lab's server, with the
    lab's S3 remote and a bare git repository as `origin`."""
    base = tmp_path_factory.mktemp("team")
    origin = base / "origin.git"
    sh(["git", "init", "-q", "--bare", "-b", "main", str(origin)], base, lab)

    def edit(p):
        p["variants"] = {VARIANT: p["variants"][VARIANT]}
        p["train"].update(max_steps=30, log_every=5, checkpoint_every=20)
        p["tracking"].update(uri=lab.uri, experiment=EXPERIMENT)
    alice = make_repo(base / "alice", edit)
    # the README's commands
    sh(["dvc", "remote", "add", "-d", "lab", "s3://ganlab/dvc"], alice, lab)
    sh(["dvc", "remote", "modify", "lab", "endpointurl", lab.client["AWS_ENDPOINT_URL_S3"]], alice, lab)
    git_commit_all(alice)
    sh(["git", "branch", "-M", "main"], alice, lab)
    sh(["git", "remote", "add", "origin", str(origin)], alice, lab)
    sh(["git", "push", "-q", "-u", "origin", "main"], alice, lab)
    return base, alice, origin


def test_a_run_is_tracked_on_the_lab_server(team, lab, client):
    """`dvc repro` of one variant with tracking.uri at the server: the run, its params, metrics and artifacts come
    back through the server; its rows are in PostgreSQL and its files in the bucket; a wrong password is refused."""
    _, alice, _ = team
    sh(["dvc", "repro", f"train@{VARIANT}"], alice, lab)
    train = json.loads((alice / "metrics" / VARIANT / "train.json").read_text())
    exp = client.get_experiment_by_name(EXPERIMENT)
    (run,) = client.search_runs([exp.experiment_id], f"tags.variant = '{VARIANT}'")
    assert run.info.run_id == train["run_id"] and run.info.status == "FINISHED"
    assert run.data.params["model.loss"] == "bce" and run.data.params["train.max_steps"] == "30"
    assert run.data.metrics["train/steps"] == 30
    assert run.data.metrics["train/d_loss"] == pytest.approx(train["d_loss"])
    history = client.get_metric_history(run.info.run_id, "train/d_loss")
    assert [m.step for m in history] == [5, 10, 15, 20, 25, 30]
    assert {a.path for a in client.list_artifacts(run.info.run_id, "model")} == {"model/generator.pt",
                                                                                 "model/variant.json"}
    local = Path(client.download_artifacts(run.info.run_id, "model/generator.pt", str(alice / "..")))
    assert digest(local) == digest(alice / "models" / VARIANT / "generator.pt")

    # the rows in PostgreSQL, the objects in the bucket (behind the server: the client never had S3 keys)
    socket_dir = str(lab.dir / "postgres" / "socket")  # PostgreSQL's only door: a Unix socket, private
    with psycopg.connect(host=socket_dir, port=int(lab.env["GANLAB_LAB_PG_PORT"]), user="ganlab",
                         password=lab_secrets(lab)["GANLAB_LAB_PG_PASSWORD"], dbname="mlflow") as conn:
        status = conn.execute("SELECT status FROM runs WHERE run_uuid = %s", (run.info.run_id,)).fetchone()
        n_loss = conn.execute("SELECT count(*) FROM metrics WHERE run_uuid = %s AND key = 'train/d_loss'",
                              (run.info.run_id,)).fetchone()
        n_params = conn.execute("SELECT count(*) FROM params WHERE run_uuid = %s", (run.info.run_id,)).fetchone()
    assert status == ("FINISHED",) and n_loss == (6,) and n_params[0] == len(run.data.params)
    keys = [o["Key"] for o in s3(lab).list_objects_v2(Bucket="ganlab", Prefix="mlflow/").get("Contents", [])]
    (key,) = [k for k in keys if k.endswith(f"{run.info.run_id}/artifacts/model/generator.pt")]
    body = s3(lab).get_object(Bucket="ganlab", Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == digest(alice / "models" / VARIANT / "generator.pt")

    # basic auth: no password and a wrong one are refused, by the API and by MLflow's client
    search = f"{lab.uri}/api/2.0/mlflow/experiments/search?max_results=5"
    assert requests.get(search, timeout=10).status_code == 401
    assert requests.get(search, auth=("admin", "not-the-password"), timeout=10).status_code == 401
    assert requests.get(search, auth=("admin", lab.client["MLFLOW_TRACKING_PASSWORD"]), timeout=10).ok
    wrong = subprocess.run(["python", "-c", f"from mlflow.tracking import MlflowClient; "
                            f"MlflowClient('{lab.uri}').search_experiments()"], capture_output=True, text=True,
                           env=lab.run_env(MLFLOW_TRACKING_PASSWORD="not-the-password"))
    assert wrong.returncode != 0 and "401" in wrong.stderr

    # a teammate's browser: the lab's runs table opens with the loss as a column, no click (ganlab.tracking.ui)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1400, "height": 900}, http_credentials={
            "username": "admin", "password": lab.client["MLFLOW_TRACKING_PASSWORD"]}).new_page()
        page.goto(f"{lab.uri}/", wait_until="load")
        page.get_by_role("link", name=EXPERIMENT, exact=True).first.click()
        page.wait_for_url("**/experiments/*", timeout=30_000)
        page.get_by_text(VARIANT, exact=True).first.wait_for(timeout=60_000)
        page.locator("[role=columnheader]", has_text="model.loss").first.wait_for(timeout=30_000)
        page.get_by_text("bce", exact=True).first.wait_for(timeout=30_000)  # the run's loss, in its row
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "lab_runs.png"))
        assert "UI telemetry" not in page.inner_text("body")  # the lab's server runs with MLflow's telemetry off
        stored = page.evaluate(f"localStorage.getItem({json.dumps(view_key(exp.experiment_id))})")
        browser.close()
    assert json.loads(stored)["selectedColumns"] == COLUMNS


def test_push_clone_pull_and_share_experiments(team, lab, client):
    """Alice pushes data, models and checkpoints to the S3 remote and the pipeline to git; Bob's fresh clone pulls
    the same files and DVC finds nothing to rerun. Alice's experiment reaches Bob through `dvc exp push/pull`."""
    base, alice, origin = team
    if not (alice / "dvc.lock").exists():
        sh(["dvc", "repro", f"train@{VARIANT}"], alice, lab)
    sh(["dvc", "push"], alice, lab)
    git_commit_all(alice, "trained gaussian_2d")
    sh(["git", "push", "-q", "origin", "main"], alice, lab)

    bob = base / "bob"
    sh(["git", "clone", "-q", str(origin), str(bob)], base, lab)
    outputs = [f"data/processed/{VARIANT}.h5", f"models/{VARIANT}/generator.pt", f"models/{VARIANT}/discriminator.pt",
               f"checkpoints/{VARIANT}/last.pt", f"samples/{VARIANT}/progress/epoch_001.csv"]
    assert not any((bob / o).exists() for o in outputs[:4])
    sh(["dvc", "pull", "--with-deps", f"train@{VARIANT}"], bob, lab)  # the stages Alice ran
    for o in outputs:
        assert digest(bob / o) == digest(alice / o), o
    status = sh(["dvc", "status", f"train@{VARIANT}"], bob, lab).stdout
    assert "up to date" in status, status

    sh(["dvc", "exp", "run", "-n", "fast-d", "-S", f"variants.{VARIANT}.train.lr_d=0.1", f"train@{VARIANT}"],
       alice, lab)
    sh(["dvc", "exp", "push", "origin", "fast-d"], alice, lab)
    assert "fast-d" in sh(["dvc", "exp", "list", "origin"], bob, lab).stdout
    sh(["dvc", "exp", "pull", "origin", "fast-d"], bob, lab)
    shown = json.loads(sh(["dvc", "exp", "show", "--json"], bob, lab).stdout)
    (exp,) = [r for b in shown for e in b.get("experiments") or [] for r in e["revs"] if r.get("name") == "fast-d"]
    params = exp["data"]["params"]["params.yaml"]["data"]
    assert params["variants"][VARIANT]["train"]["lr_d"] == 0.1
    # its training summary came with it (metrics/<v>/train.json is committed in the experiment's commit)
    metrics = json.loads(sh(["git", "show", f"{exp['rev']}:metrics/{VARIANT}/train.json"], bob, lab).stdout)
    assert metrics["steps"] == 30
    # its MLflow run is on the server, named after the experiment
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id],
                              "tags.dvc_exp_name = 'fast-d'")
    assert [r.info.run_id for r in runs] == [metrics["run_id"]]
    assert runs[0].data.params["train.lr_d"] == "0.1"
