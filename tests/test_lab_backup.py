"""Nothing lost: `ganlab lab backup` of the session's lab, `restore` into a fresh lab (the suite's one extra lab
start), every run, metric history, param, tag, artifact and object compared by content; that lab's `down` and
`up` keep it all; and `down` leaves alone a process that reuses a recorded pid."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import boto3
import pytest
from mlflow.tracking import MlflowClient

from conftest import lab_ports, start_lab

pytestmark = pytest.mark.e2e
SECOND_HOST = "127.0.0.3"


def snapshot(lab, monkeypatch, scratch: Path) -> dict:
    """Every run (info, params, tags, each metric's full history, each artifact's sha256) and every object."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", lab.client["MLFLOW_TRACKING_PASSWORD"])
    client, runs = MlflowClient(lab.uri), {}
    exps = client.search_experiments()
    for run in client.search_runs([e.experiment_id for e in exps], max_results=1000):
        rid = run.info.run_id
        history = {k: sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(rid, k))
                   for k in run.data.metrics}
        files, todo = {}, [None]
        while todo:
            for a in client.list_artifacts(rid, todo.pop()):
                if a.is_dir:
                    todo.append(a.path)
                else:
                    local = client.download_artifacts(rid, a.path, str(scratch))
                    files[a.path] = hashlib.sha256(Path(local).read_bytes()).hexdigest()
        runs[rid] = {"info": (run.info.experiment_id, run.info.run_name, run.info.status, run.info.start_time,
                              run.info.end_time), "params": run.data.params, "tags": run.data.tags,
                     "metrics": history, "artifacts": files}
    s3 = boto3.client("s3", endpoint_url=lab.client["AWS_ENDPOINT_URL_S3"], region_name="us-east-1",
                      aws_access_key_id=lab.client["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=lab.client["AWS_SECRET_ACCESS_KEY"])
    objects = {o["Key"]: hashlib.sha256(s3.get_object(Bucket="ganlab", Key=o["Key"])["Body"].read()).hexdigest()
               for page in s3.get_paginator("list_objects_v2").paginate(Bucket="ganlab")
               for o in page.get("Contents", [])}
    return {"experiments": sorted((e.experiment_id, e.name) for e in exps), "runs": runs, "objects": objects}


def seed(lab, monkeypatch) -> None:
    """A run with a metric history, params, tags and an artifact, and a DVC object, whatever else ran before."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", lab.client["MLFLOW_TRACKING_PASSWORD"])
    client = MlflowClient(lab.uri)
    run = client.create_run(client.create_experiment("kept")).info.run_id
    for step in range(5):
        client.log_metric(run, "loss", 1.0 / (step + 1), step=step)
    client.log_param(run, "lr", "0.0002")
    client.set_tag(run, "variant", "kept")
    client.log_text(run, "weights" * 100, "model/weights.txt")
    client.set_terminated(run)
    boto3.client("s3", endpoint_url=lab.client["AWS_ENDPOINT_URL_S3"], region_name="us-east-1",
                 aws_access_key_id=lab.client["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=lab.client["AWS_SECRET_ACCESS_KEY"]).put_object(
        Bucket="ganlab", Key="dvc/files/md5/ab/cdef", Body=os.urandom(3000))


def test_backup_restore_down_up(lab, tmp_path, monkeypatch):
    seed(lab, monkeypatch)
    before = snapshot(lab, monkeypatch, tmp_path / "a")
    assert before["runs"] and any(k.startswith("dvc/") for k in before["objects"])
    lab.lab("backup", str(tmp_path / "backup"))
    again = lab.lab("backup", str(tmp_path / "backup"), check=False)
    assert again.returncode == 1 and "exists" in again.stderr

    folder = Path(tempfile.mkdtemp(prefix="ganlab-lab-restored-"))
    settings = {"GANLAB_LAB_DIR": str(folder), "GANLAB_LAB_HOST": SECOND_HOST, **lab_ports(SECOND_HOST)}
    sleeper = None
    try:
        restored = lab.__class__(folder, settings, {})
        restored.lab("restore", str(tmp_path / "backup"))
        restored = start_lab(folder, settings)  # already up: reads its admin keys (the backup's)
        assert snapshot(restored, monkeypatch, tmp_path / "b") == before
        twice = restored.lab("restore", str(tmp_path / "backup"), check=False)
        assert twice.returncode == 1 and "is not empty" in twice.stderr

        restored.lab("down")
        restored = start_lab(folder, settings)
        assert snapshot(restored, monkeypatch, tmp_path / "c") == before

        # a process that reuses the MLflow server's recorded pid (same pid, another start time) is not ours
        sleeper = subprocess.Popen(["sleep", "300"], start_new_session=True)
        real = (folder / "run" / "mlflow.pid").read_text().split()
        (folder / "run" / "mlflow.pid").write_text(f"{sleeper.pid} {int(real[1]) - 1}\n")
        restored.lab("down")
        assert sleeper.poll() is None  # alive
        os.killpg(int(real[0]), 15)  # the real server, which the planted record hid from `down`
        status = restored.lab("status", check=False)
        assert status.returncode == 3 and "postgres   stopped" in status.stdout
    finally:
        if sleeper is not None:
            sleeper.kill()
        lab.__class__(folder, settings, {}).lab("down", check=False)
        shutil.rmtree(folder, ignore_errors=True)
