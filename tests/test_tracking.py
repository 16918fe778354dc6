"""MLflow tracking through the real stage script and a real SQLite store."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from mlflow.tracking import MlflowClient

from ganlab.config import TrackingCfg
from ganlab.tracking.store import open_client
from helpers import REPO, env, run, write_mnist_h5, write_params


def stage(root, name):
    return [sys.executable, str(REPO / "stages/train.py"), name, "--params", str(root / "params.yaml"),
            "--data-dir", str(root / "data"), "--root", str(root)]


@pytest.fixture
def root(tmp_path):
    write_mnist_h5(tmp_path / "data" / "mnist.h5")
    return tmp_path


def client(root):
    """The store's client, opened as the stages open it (under ganlab's store lock): a test that polls a store a
    stage is creating must not create its schema at the same time (it did, under load, and the stage failed)."""
    return open_client(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")


def runs(root):
    if not (root / "mlruns" / "mlflow.db").exists():  # the stage has not opened the store yet
        return []
    c = client(root)
    exp = c.get_experiment_by_name("ganlab")
    return c.search_runs([exp.experiment_id]) if exp else []


def _rows(steps, log_every=5):
    return [{"step": s, "epoch": 1, "d_loss": float(s), "d_real": 1.0, "d_fake": 2.0, "d_gp": 0.0, "g_loss": -s,
             "d_x": 0.5, "d_gz": 0.25} for s in range(log_every, steps + 1, log_every)]


@pytest.mark.parametrize("loss", ["bce", "wgan_gp"])
def test_a_long_run_sends_window_means_and_resumes_to_the_same_points(tmp_path, loss):
    """tracking.max_points 4 on 20 rows: one point per 25 steps, the mean of its 5 rows, at the step ending it;
    d_gp only with a penalty. A run killed at step 60 and resumed (sending its checkpoint's rows again, as fit
    does) ends with exactly the points of an uninterrupted run."""
    from ganlab.config import load_params
    from ganlab.tracking.tracker import MlflowTracker

    cfg = load_params(REPO / "params.yaml").variant("mnist_vanilla")
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"log_every": 5}),
                                 "model": cfg.model.model_copy(update={"loss": loss})})
    track = TrackingCfg(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", max_points=4)

    def history(run_id):
        c = MlflowClient(track.uri)
        keys = c.get_run(run_id).data.metrics
        return {k: [(m.step, m.value) for m in c.get_metric_history(run_id, k)] for k in keys}

    whole = MlflowTracker("whole", track, stage="test")
    whole.start(cfg, None, total_steps=100)
    whole.log_rows(_rows(100))
    whole.end({"steps": 100}, "FINISHED")
    h = history(whole.run_id)
    assert h["train/d_loss"] == [(25, 15.0), (50, 40.0), (75, 65.0), (100, 90.0)]
    assert h["train/g_loss"] == [(25, -15.0), (50, -40.0), (75, -65.0), (100, -90.0)]
    assert ("train/d_gp" in h) == (loss == "wgan_gp")

    killed = MlflowTracker("killed", track, stage="test")
    killed.start(cfg, None, total_steps=100)
    killed.log_rows(_rows(60))  # rows up to 60 (the checkpoint at 50): points at 25 and 50 sent, 55-60 pending
    killed.flush()
    killed.end({}, "KILLED")
    resumed = MlflowTracker("killed", track, stage="test")
    resumed.start(cfg, killed.run_id, total_steps=100)
    resumed.log_rows(_rows(50))  # fit resends the checkpoint's rows, then trains on
    resumed.log_rows(_rows(100)[10:])
    resumed.end({"steps": 100}, "FINISHED")
    assert history(killed.run_id) == h


def test_a_run_holds_params_tags_metrics_and_artifacts(root, monkeypatch):
    write_params(root / "params.yaml", lambda p: p["train"].update(max_steps=30, log_every=5, device="cpu"))
    proc = run(stage(root, "mnist_cgan"), root)
    # the global log_every masks the variant's own 10: said at parse time, naming both keys
    assert "global train.log_every = 5 masks variants.mnist_cgan.train.log_every = 10" in proc.stderr
    (r,) = runs(root)
    assert r.info.status == "FINISHED" and r.info.run_name == "mnist_cgan"
    assert r.data.tags["mlflow.source.git.commit"] == r.data.tags["git_commit"] and "dvc_exp_name" not in r.data.tags
    assert r.data.tags["override.train.log_every"] == "5" and r.data.tags["overridden"] == \
        "train.device,train.log_every,train.max_steps"
    assert r.data.params["model.loss"] == "bce" and r.data.params["train.lr_g"] == "0.0001"
    assert r.data.params["model.n_classes"] == "10" and r.data.params["train.max_steps"] == "30"
    assert r.data.tags["variant"] == "mnist_cgan" and r.data.tags["source"] == "book"
    assert r.data.tags["dvc_stage"] == "train@mnist_cgan" and r.data.tags["torch_version"] == torch.__version__
    history = client(root).get_metric_history(r.info.run_id, "train/d_loss")
    assert [m.step for m in history] == [5, 10, 15, 20, 25, 30]
    assert {f"train/{k}" for k in ("g_loss", "d_x", "d_gz", "d_real", "d_fake", "images_per_s",
                                   "peak_memory_bytes", "epochs_done")} <= set(r.data.metrics)
    assert not [k for k in r.data.metrics if not k.startswith("train/")]
    metrics = json.loads((root / "metrics/mnist_cgan/train.json").read_text())
    assert metrics["run_id"] == r.info.run_id  # the link from DVC's metrics to the MLflow run
    assert r.data.metrics["train/d_loss"] == pytest.approx(metrics["d_loss"])
    art = {f.path for d in ("model", "plots", "params") for f in client(root).list_artifacts(r.info.run_id, d)}
    assert art == {"model/generator.pt", "model/variant.json", "plots/losses.csv", "plots/losses.png",
                   "params/params.json"}
    # the grids as images of the UI's image view, at the steps they were drawn: 0 (untrained), 30 (max_steps ends
    # epoch 1)
    grids = [f.path.split("+") for f in client(root).list_artifacts(r.info.run_id, "images") if f.path.endswith(".png")]
    assert sorted((g[0], int(g[2])) for g in grids) == [("images/train~progress", 0), ("images/train~progress", 30)]
    # the logged generator rebuilds and samples: same weights as the DVC output
    monkeypatch.chdir(root)
    from ganlab.tracking.runs import load_generator
    G = load_generator(r.info.run_id, TrackingCfg())
    ours = torch.load(root / "models/mnist_cgan/generator.pt")
    assert all(torch.equal(G.state_dict()[k], ours[k]) for k in ours)
    assert G(torch.randn(3, G.variant.model.nz), torch.tensor([1, 2, 3])).shape == (3, 1, 28, 28)
    # the generator is the run's MLflow 3 logged model: the same state dict and config, no pickle
    (model,) = client(root).search_logged_models([r.info.experiment_id])
    assert model.source_run_id == r.info.run_id and model.name == "mnist_cgan" and str(model.status) == "READY"
    assert model.params["nz"] == "100" and model.params["loss"] == "bce"
    files = {f.path for f in client(root).list_logged_model_artifacts(model.model_id)}
    assert files == {"generator.pt", "variant.json"}
    assert [o.model_id for o in client(root).get_run(r.info.run_id).outputs.model_outputs] == [model.model_id]


def test_an_existing_experiment_gets_the_training_kind_and_runs_name_their_dvc_exp(root, monkeypatch):
    """A store whose experiment was made without the kind (older ganlab, or `mlflow` itself) opens on the GenAI
    overview in MLflow 3's UI; the next run sets it. Under `dvc exp run` the run is tagged and named after it."""
    exp_id = client(root).create_experiment("ganlab")
    assert "mlflow.experimentKind" not in client(root).get_experiment(exp_id).tags
    write_params(root / "params.yaml", lambda p: p["train"].update(max_steps=2, log_every=1, device="cpu"))
    monkeypatch.setenv("DVC_EXP_NAME", "tiny-exp")
    run(stage(root, "mnist_vanilla"), root)
    assert client(root).get_experiment(exp_id).tags["mlflow.experimentKind"] == "custom_model_development"
    (r,) = runs(root)
    assert r.info.run_name == "mnist_vanilla · tiny-exp" and r.data.tags["dvc_exp_name"] == "tiny-exp"
    found = client(root).search_runs([exp_id], "tags.dvc_exp_name = 'tiny-exp'")
    assert [x.info.run_id for x in found] == [r.info.run_id]


def test_sigterm_ends_killed_and_the_resumed_run_continues_it(root):
    name = "mnist_mlp"
    write_params(root / "params.yaml",
                 lambda p: p["train"].update(max_steps=3000, checkpoint_every=100, log_every=50, device="cpu"))
    proc = subprocess.Popen(stage(root, name), cwd=root, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    ckpt = root / "checkpoints" / name / "last.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # what `dvc queue kill` sends
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0, err
    (killed,) = runs(root)
    assert killed.info.status == "KILLED"
    resumed = run(stage(root, name), root)
    assert "resuming from step" in resumed.stderr
    (r,) = runs(root)  # still one run: the resumed training continued it
    assert r.info.run_id == killed.info.run_id and r.info.status == "FINISHED"
    assert json.loads((root / f"metrics/{name}/train.json").read_text())["run_id"] == r.info.run_id
    steps = [m.step for m in client(root).get_metric_history(r.info.run_id, "train/g_loss")]
    assert steps[-1] == 3000


def test_failed_run_ends_failed(root):
    write_params(root / "params.yaml", lambda p: p["train"].update(
        max_steps=40, optimizer="sgd", lr_d=1e30, lr_g=1e30, log_every=5, device="cpu"))
    assert run(stage(root, "mnist_lsgan"), root, check=False).returncode == 1
    (r,) = runs(root)
    assert r.info.status == "FAILED"


def test_a_run_left_running_by_sigkill_is_closed_killed(root):
    write_params(root / "params.yaml", lambda p: p["train"].update(max_steps=3000, log_every=50, device="cpu"))
    proc = subprocess.Popen(stage(root, "mnist_mlp"), cwd=root, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not runs(root) and time.time() < deadline:
        time.sleep(0.1)
    proc.kill()  # SIGKILL: nothing in the process can end its run
    proc.wait()
    (orphan,) = runs(root)
    assert orphan.info.status == "RUNNING"
    write_params(root / "params.yaml", lambda p: p["train"].update(max_steps=20, log_every=5, device="cpu"))
    run(stage(root, "mnist_mlp"), root)  # the next run of the variant notices the dead process
    status = {r.info.run_id: r.info.status for r in runs(root)}
    assert status[orphan.info.run_id] == "KILLED" and sorted(status.values()) == ["FINISHED", "KILLED"]
