"""Hardening, each fault provoked for real: planted pickles, kills at a chosen step (by a hook, not a timer),
decompression bombs, corrupt files, non-numbers in params, leftovers of a killed packer, MLflow's telemetry."""

from __future__ import annotations

import io
import json
import os
import random
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas
import pytest
import torch
from conftest import write_zip
from mlflow.tracking import MlflowClient
from PIL import Image

from ganlab.config import CelebaDataCfg, ConfigError, load_params
from ganlab.data.celeba import pack_celeba
from ganlab.data.download import DataError
from ganlab.data.load import load_dataset
from ganlab.engine.checkpoint import CheckpointError
from ganlab.engine.contract import RunPaths
from ganlab.engine.train import fit
from ganlab.evaluation.classifier import load_classifier
from ganlab.evaluation.evaluate import epoch_time, final_losses
from ganlab.evaluation.sampling import load_trained
from ganlab.io import TMP_MARK, BadFile
from helpers import REPO, env, write_mnist_h5, write_params

PARAMS = load_params(REPO / "params.yaml")
NAME = "mnist_mlp"
STEPS, LOG, CKPT = 120, 10, 40
KILLER = str(REPO / "tests" / "killer.py")
TIMING = {"wall_time_s", "images_per_s", "peak_memory_bytes"}  # differ run to run; everything else must not


class Evil:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def plant(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"G": Evil(marker), "progress": {"step": 1}}, path)
    return path


def small(**train):
    cfg = PARAMS.variant(NAME)
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"device": "cpu", **train})})


# --------------------------------------------------------------------------------------------------- stage runs
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    write_mnist_h5(d / "mnist.h5")
    return d


def stage_root(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_params(root / "params.yaml", lambda p: p["train"].update(
        max_steps=STEPS, log_every=LOG, checkpoint_every=CKPT, device="cpu"))
    return root


def train_cmd(root: Path, data_dir: Path) -> list[str]:
    return ["stages/train.py", NAME, "--params", str(root / "params.yaml"), "--data-dir", str(data_dir),
            "--root", str(root)]


def run_stage(root: Path, data_dir: Path, kill: list[str] | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, KILLER, *kill, "--", *train_cmd(root, data_dir)] if kill else \
        [sys.executable, *train_cmd(root, data_dir)]
    # One thread: batch-1 steps of a small MLP are faster so, and much faster on a machine with other work.
    return subprocess.run([c if c != "stages/train.py" else str(REPO / c) for c in cmd], cwd=root,
                          env=env() | {"OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)


def store(root: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")


def the_run(root: Path):
    c = store(root)
    (run,) = c.search_runs([c.get_experiment_by_name("ganlab").experiment_id])
    return run


def histories(root: Path) -> dict[str, list[tuple[int, float]]]:
    run, c = the_run(root), store(root)
    return {k: sorted((m.step, m.value) for m in c.get_metric_history(run.info.run_id, k)) for k in run.data.metrics}


@pytest.fixture(scope="module")
def whole(tmp_path_factory, data_dir) -> Path:
    """The reference: the same run, never killed."""
    root = stage_root(tmp_path_factory.mktemp("whole"))
    proc = run_stage(root, data_dir)
    assert proc.returncode == 0, proc.stderr
    return root


def assert_same_run(root: Path, whole: Path) -> None:
    """One FINISHED run with, per metric, exactly the reference's steps, and its values (timings aside)."""
    ours, ref = histories(root), histories(whole)
    assert the_run(root).info.status == "FINISHED"
    assert ours.keys() == ref.keys()
    for k in ref:
        assert [s for s, _ in ours[k]] == [s for s, _ in ref[k]], k  # one value per logged step: no gap, no repeat
        if k.removeprefix("train/") not in TIMING:
            assert ours[k] == ref[k], k
    assert len(ref["train/d_loss"]) == STEPS // LOG
    a, b = (torch.load(r / "models" / NAME / "generator.pt") for r in (root, whole))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (root / "plots" / NAME / "losses.csv").read_text() == (whole / "plots" / NAME / "losses.csv").read_text()


@pytest.mark.parametrize("sent", [True, False], ids=["rows-sent-past-checkpoint", "rows-buffered"])
def test_kill_9_at_a_random_step_resumes_to_the_unkilled_run(tmp_path, data_dir, whole, sent):
    """SIGKILL right after the row of a random step between checkpoints was handed to MLflow: either sent already
    (the resumed run redoes those steps and must not log them twice) or still buffered (it must log them from the
    checkpoint). Afterwards: the unkilled run's metric history, weights and loss log; time covers both segments."""
    calls = random.choice([n for n in range(CKPT // LOG + 1, STEPS // LOG) if n * LOG % CKPT])
    root = stage_root(tmp_path / "killed")
    sets = ["--set", f"ganlab.tracking.tracker:FLUSH_SECONDS={0.0 if sent else 1e9}"]
    killed = run_stage(root, data_dir, ["ganlab.tracking.tracker:MlflowTracker.log_rows", str(calls), "after", *sets])
    assert killed.returncode == -9, killed.stderr
    saved = torch.load(root / "checkpoints" / NAME / "last.pt", weights_only=True)["progress"]
    assert saved["step"] == calls * LOG // CKPT * CKPT and saved["wall_s"] > 0, f"killed at step {calls * LOG}"
    logged = histories(root).get("train/d_loss", [])
    assert len(logged) == (calls if sent else 0), "the kill did not happen where the test meant it to"

    resumed = run_stage(root, data_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from step {saved['step']} of {STEPS}" in resumed.stderr
    assert_same_run(root, whole)
    m = json.loads((root / "metrics" / NAME / "train.json").read_text())
    assert m["wall_time_s"] > saved["wall_s"]  # the first segment's training time is counted ...
    assert m["wall_time_s"] < saved["wall_s"] + 60  # ... once, plus this segment's
    assert m["images_per_s"] == pytest.approx(m["images_seen"] / m["wall_time_s"], rel=0.01)
    assert m["images_seen"] == STEPS


def test_kill_while_finishing_the_mlflow_run_finishes_without_training(tmp_path, data_dir, whole):
    """SIGKILL after the last step, the outputs and the final metrics, just before MLflow marks the run finished:
    the next run finishes it from the complete checkpoint instead of training again."""
    root = stage_root(tmp_path / "killed")
    killed = run_stage(root, data_dir, ["mlflow.tracking:MlflowClient.set_terminated", "1", "before"])
    assert killed.returncode == -9, killed.stderr
    assert the_run(root).info.status == "RUNNING"
    before = json.loads((root / "metrics" / NAME / "train.json").read_text())

    again = run_stage(root, data_dir)
    assert again.returncode == 0, again.stderr
    assert f"training finished before ({STEPS} steps" in again.stderr and "resuming" not in again.stderr
    assert f"epoch 1/" not in again.stderr  # no training loop ran
    assert json.loads((root / "metrics" / NAME / "train.json").read_text()) == before
    assert_same_run(root, whole)


# --------------------------------------------------------------------------------------------------- planted files
def test_a_planted_checkpoint_cannot_run_code(tmp_path, data_dir):
    marker = tmp_path / "pwned"
    plant(tmp_path / "checkpoints" / NAME / "last.pt", marker)
    with pytest.raises(CheckpointError, match=r"last.pt: refused: it holds pickled Python objects \(it names "
                                              r"posix.system\).*nothing in it was run; rebuild it with `rm .*last.pt "
                                              r"&& dvc repro train@mnist_mlp`"):
        fit(small(max_steps=5), NAME, RunPaths.for_variant(NAME, tmp_path, data_dir))
    assert not marker.exists()
    assert not (tmp_path / "models").exists()


def test_planted_generator_and_classifier_files_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(BadFile, match="generator.pt: refused: it holds pickled Python objects"):
        load_trained(small(), plant(tmp_path / "models" / NAME / "generator.pt", marker).parent, (1, 28, 28),
                     torch.device("cpu"))
    with pytest.raises(BadFile, match="cnn.pt: refused.*`dvc repro train_classifier`"):
        load_classifier(plant(tmp_path / "models" / "classifier" / "cnn.pt", marker), torch.device("cpu"))
    assert not marker.exists()


def test_a_planted_mlflow_model_cannot_run_code(tmp_path, monkeypatch):
    from ganlab.config import TrackingCfg
    from ganlab.tracking.runs import load_generator

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = MlflowClient(uri)
    exp = c.create_experiment("ganlab", artifact_location=(tmp_path / "artifacts").as_uri())
    run = c.create_run(exp)
    marker, model = tmp_path / "pwned", tmp_path / "model"
    plant(model / "generator.pt", marker)
    (model / "variant.json").write_text(json.dumps({"variant": NAME, "data_shape": [1, 28, 28],
                                                    "config": small().model_dump(mode="json")}))
    c.log_artifacts(run.info.run_id, str(model), "model")
    with pytest.raises(BadFile, match="generator.pt: refused: it holds pickled Python objects"):
        load_generator(run.info.run_id, TrackingCfg(uri=uri))
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------- corrupt files
def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    return path


def test_corrupt_files_give_one_line_naming_the_file_and_the_rebuild(tmp_path, data_dir):
    """Truncated or garbage .h5, .pt, losses.csv, train.json: a BadFile naming the file, what is wrong and the
    command that rebuilds it; through a stage, one line and no traceback."""
    root = tmp_path
    fit(small(max_steps=20, log_every=5, checkpoint_every=10), NAME, RunPaths.for_variant(NAME, root, data_dir))
    bad_data = tmp_path / "bad"
    bad_data.mkdir()
    (bad_data / "mnist.h5").write_bytes((data_dir / "mnist.h5").read_bytes())
    truncate(bad_data / "mnist.h5")
    with pytest.raises(BadFile, match=r"mnist.h5: not a readable HDF5 file, truncated or garbage .*"
                                      r"rebuild it with `dvc repro download_mnist`"):
        load_dataset(small().data, bad_data, torch.device("cpu"))
    gen = truncate(root / "models" / NAME / "generator.pt")
    with pytest.raises(BadFile, match=r"generator.pt: not a readable PyTorch file, truncated or garbage .*"
                                      r"`dvc repro train@mnist_mlp`"):
        load_trained(small(), gen.parent, (1, 28, 28), torch.device("cpu"))
    gen.write_bytes(b"garbage" * 100)
    with pytest.raises(BadFile, match="generator.pt: not a readable PyTorch file"):
        load_trained(small(), gen.parent, (1, 28, 28), torch.device("cpu"))
    losses = truncate(root / "plots" / NAME / "losses.csv", 0.7)
    with pytest.raises(BadFile, match=r"losses.csv: truncated: the last line is cut off; .*train@mnist_mlp"):
        final_losses(losses, "bce", 0.5)
    losses.write_text("step,epoch,d_loss,d_real,d_fake,d_gp,g_loss,d_x,d_gz\n5,1,x,1,1,1,1,1,1\n")
    with pytest.raises(BadFile, match="losses.csv: column d_loss holds values that are not numbers"):
        final_losses(losses, "bce", 0.5)
    train_json = truncate(root / "metrics" / NAME / "train.json")
    with pytest.raises(BadFile, match=r"train.json: not valid JSON, truncated or garbage .*train@mnist_mlp"):
        epoch_time(train_json)
    ckpt = truncate(root / "checkpoints" / NAME / "last.pt")
    with pytest.raises(CheckpointError, match="last.pt: not a readable PyTorch file, truncated"):
        fit(small(max_steps=20, log_every=5, checkpoint_every=10), NAME, RunPaths.for_variant(NAME, root, data_dir))
    torch.save({"G": {}, "format": 2}, ckpt)  # tensors and plain values, but not a checkpoint
    with pytest.raises(CheckpointError, match="last.pt: not a ganlab checkpoint: expected the keys"):
        fit(small(max_steps=20, log_every=5, checkpoint_every=10), NAME, RunPaths.for_variant(NAME, root, data_dir))

    write_params(root / "params.yaml", lambda p: p["train"].update(max_steps=5, device="cpu"))
    proc = subprocess.run([sys.executable, str(REPO / "stages/train.py"), NAME, "--params", str(root / "params.yaml"),
                           "--data-dir", str(bad_data), "--root", str(root)], cwd=root, env=env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and " INFO mlflow." not in ln]  # store creation
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"train@{NAME}: error: {bad_data / 'mnist.h5'}: not a readable HDF5 file, truncated "
                               f"or garbage ("), proc.stderr
    assert lines[0].endswith("rebuild it with `dvc repro download_mnist`"), proc.stderr


# --------------------------------------------------------------------------------------------------- bombs
def jpeg_declaring(width: int, height: int) -> bytes:
    """A tiny real JPEG whose frame header (SOF0) claims width x height pixels."""
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(out, format="JPEG")
    data = bytearray(out.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def bomb_zip(path: Path, jpegs: dict[str, bytes], entry_mb: int) -> Path:
    """The first 8 faces, then: a JPEG declaring 60000x60000 (over Pillow's own limit), one declaring 4000x3000
    (under Pillow's, over ours), and an entry that inflates to `entry_mb` MB of zeros from a few KB."""
    entries = dict(list(jpegs.items())[:8])
    entries["img_align_celeba/000009.jpg"] = jpeg_declaring(60000, 60000)
    entries["img_align_celeba/000010.jpg"] = jpeg_declaring(4000, 3000)
    write_zip(path, entries)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("img_align_celeba/000011.jpg", "w", force_zip64=True) as f:
            block = bytes(1 << 20)
            for _ in range(entry_mb):
                f.write(block)
    return path


def test_decompression_bombs_are_corrupt_images_and_memory_stays_bounded(tmp_path, celeba_jpegs):
    import tracemalloc

    zip_path = bomb_zip(tmp_path / "bomb.zip", celeba_jpegs, entry_mb=64)
    assert zip_path.stat().st_size < 1_000_000
    cfg = CelebaDataCfg(n_images=11, workers=1, skip_corrupt=True, max_entry_bytes=64 << 10)
    tracemalloc.start()
    try:
        stats = pack_celeba(cfg, zip_path, tmp_path / "out")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (stats.count, stats.skipped_corrupt) == (8, 3)
    assert peak < 16 << 20, f"{peak} bytes traced: the 64 MB entry was read"
    for declared in ((60000, 60000), (4000, 3000)):  # each alone, without skip_corrupt: a clear error
        one = write_zip(tmp_path / f"{declared[0]}.zip", {"img_align_celeba/000001.jpg": jpeg_declaring(*declared)})
        with pytest.raises(DataError, match=r"000001.jpg: corrupt JPEG \(.*(DecompressionBomb|max_pixels).*"
                                            r"skip_corrupt: true"):
            pack_celeba(CelebaDataCfg(n_images=1, workers=1), one, tmp_path / "strict")
    big = write_zip(tmp_path / "big.zip", {"img_align_celeba/000001.jpg": bytes(1 << 20)})
    with pytest.raises(DataError, match=r"000001.jpg: corrupt JPEG \(.*inflates to 1048576 bytes, more than "
                                        r"data.celeba.max_entry_bytes \(65536\)"):
        pack_celeba(CelebaDataCfg(n_images=1, workers=1, max_entry_bytes=64 << 10), big, tmp_path / "strict")
    assert not (tmp_path / "strict").exists() or not any((tmp_path / "strict").iterdir())


# --------------------------------------------------------------------------------------------------- params
@pytest.mark.parametrize("key,value,message", [
    (("train", "lr_g"), ".inf", "finite number"),
    (("train", "lr_d"), ".nan", "finite number"),
    (("variants", "mnist_mlp", "data", "mean"), "-.inf", "finite number"),
    (("train", "betas"), "[.nan, 0.999]", "finite number"),
    (("tracking", "uri"), "mlruns/mlflow.db", "not a tracking URI ganlab can use; write sqlite:///path"),
    (("tracking", "uri"), "http://", "http(s)://host"),
    (("tracking", "uri"), "sqlite://relative.db", "not a tracking URI"),
])
def test_non_numbers_and_malformed_tracking_uris_are_refused(tmp_path, key, value, message):
    import yaml

    def edit(p):
        node = p
        for k in key[:-1]:
            node = node[k]
        node[key[-1]] = yaml.safe_load(value)
    with pytest.raises(ConfigError, match=rf"{'.'.join(key)}.*{message.replace('(', '.').replace(')', '.')}"):
        load_params(write_params(tmp_path / "params.yaml", edit))


@pytest.mark.parametrize("uri", ["sqlite:////abs/mlflow.db", "sqlite:///rel/mlflow.db", "http://127.0.0.1:5000",
                                 "https://mlflow.example.org/prefix"])
def test_good_tracking_uris_pass(tmp_path, uri):
    load_params(write_params(tmp_path / "params.yaml", lambda p: p["tracking"].update(uri=uri)))


# --------------------------------------------------------------------------------------------------- leftovers
def test_a_packer_killed_mid_write_leaves_temporaries_the_next_run_removes(tmp_path, celeba_jpegs):
    zip_path = write_zip(tmp_path / "celeba.zip", celeba_jpegs)
    out = tmp_path / "out"
    write_params(tmp_path / "params.yaml", lambda p: p["data"]["celeba"].update(n_images=10, workers=1))
    proc = subprocess.run([sys.executable, KILLER, "ganlab.data.celeba:_corrupt_names", "1", "after", "--",
                           str(REPO / "stages/pack_celeba.py"), "--params", str(tmp_path / "params.yaml"),
                           "--zip", str(zip_path), "--out-dir", str(out)], env=env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -9, proc.stderr
    stale = sorted(p.name for p in out.iterdir())
    assert len(stale) == 2 and all(TMP_MARK in n for n in stale), stale  # only temporaries, no half outputs
    host = socket.gethostname()
    others = [out / f"celeba.h5{TMP_MARK}{host}-{os.getppid()}",  # a live process's (pytest's parent)
              out / f"celeba.h5{TMP_MARK}elsewhere-999999",  # another machine's
              out / "celeba.h5.tmp"]  # not ours
    for p in others:
        p.write_bytes(b"x")
    pack_celeba(CelebaDataCfg(n_images=10, workers=1), zip_path, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(["celeba.h5", "celeba_full.h5", *(p.name for p in others)])


# --------------------------------------------------------------------------------------------------- telemetry
@pytest.mark.parametrize("on", [False, True])
def test_mlflow_telemetry_is_off_unless_params_turn_it_on(tmp_path, on):
    """MLflow disables its telemetry itself under pytest and CI; the check runs without those variables."""
    code = ("from ganlab.config import TrackingCfg; from ganlab.tracking import MlflowTracker; "
            f"MlflowTracker('x', TrackingCfg(telemetry={on}), 'test'); "
            "from mlflow.telemetry.client import get_telemetry_client; print(get_telemetry_client() is not None)")
    e = {k: v for k, v in env().items() if k not in ("PYTEST_CURRENT_TEST", "CI", "MLFLOW_DISABLE_TELEMETRY",
                                                     "DO_NOT_TRACK", "GITHUB_ACTIONS")}
    e["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(on)
