"""Untrusted inputs, round 3, each provoked for real: hostile variant names (a real `dvc repro`), planted links
and non-PNGs among the pictures, a loss name that walks out of reports/, links planted at temporary names, sizes
no machine holds (params and a planted MLflow model), secrets in URLs, and the sweep recipes' shell. The plots
page's hostile CSV cell is tested in Chromium in tests/test_plots_offline.py."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from ganlab.config import ConfigError, LimitsCfg, TrackingCfg, load_params
from ganlab.images import save_png
from ganlab.io import TMP_MARK, BadFile, atomic_write, temp_path
from ganlab.report.report import pictures
from ganlab.report.results import collect
from helpers import REPO, env, make_repo, run, write_params

PARAMS = load_params(REPO / "params.yaml")
SHELL_NAME = "x;touch PWNED;#"


def params_with(tmp_path: Path, edit) -> Path:
    return write_params(tmp_path / "params.yaml", edit)


# --------------------------------------------------------------------------------------------------- 1. names
@pytest.mark.parametrize("name", [SHELL_NAME, "o'brien", "a b", "..", "Mnist", "9lives", "a" * 65, "x/y"])
def test_a_name_unsafe_in_a_command_a_path_or_a_filter_is_refused(tmp_path, name):
    def edit(p):
        p["variants"][name] = p["variants"]["pattern_1010"]
    with pytest.raises(ConfigError, match=rf"variants\.{re.escape(repr(name))}: the name is refused: .*shell "
                                          rf"commands.*\[a-z\]\[a-z0-9_\]\{{0,63\}}.*rename it, e.g. to '[a-z]"):
        load_params(params_with(tmp_path, edit))


def test_every_shipped_variant_name_fits():
    assert len(PARAMS.variants) >= 17 and all(re.fullmatch(r"[a-z][a-z0-9_]{0,63}", n) for n in PARAMS.variants)


def test_dvc_repro_stops_a_shell_name_at_check_params_before_running_it(tmp_path):
    """The real pipeline: dvc.yaml pastes the name into train@'s `cmd:`; check_params must stop DVC first."""
    root = make_repo(tmp_path / "repo", lambda p: p.update(variants={SHELL_NAME: p["variants"]["pattern_1010"]}))
    proc = run(["dvc", "repro", f"train@{SHELL_NAME}"], root, check=False)
    assert proc.returncode != 0
    assert "the name is refused" in proc.stderr + proc.stdout
    assert not (root / "PWNED").exists()
    assert not (root / "data" / "processed").exists()  # nothing after check_params ran


# --------------------------------------------------------------------------------------------------- 2, 3. report
def planted_project(tmp_path: Path, loss: str = "bce") -> Path:
    root = tmp_path / "project"
    (root / "metrics" / "mnist_mlp").mkdir(parents=True)
    (root / "metrics" / "mnist_mlp" / "eval.json").write_text(json.dumps({"loss": loss, "fid_mnist": 1.0}))
    save_png(np.zeros((8, 8), np.uint8), root / "samples" / "mnist_mlp" / "sample" / "grid.png")
    return root


def test_a_picture_linked_outside_the_project_is_refused_by_name(tmp_path):
    root = planted_project(tmp_path)
    secret = tmp_path / "home" / "id_rsa"
    secret.parent.mkdir()
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (root / "samples" / "mnist_mlp" / "sample" / "key.png").symlink_to(secret)
    with pytest.raises(BadFile, match=r"sample/key\.png: refused: it leads outside the project .*id_rsa.*remove it"):
        pictures(collect(PARAMS, root), root / "reports" / "img", root)
    assert not (root / "reports" / "img" / "mnist_mlp" / "key.png").exists()


def test_a_file_that_is_not_a_png_is_refused_and_the_pipelines_own_are_copied(tmp_path):
    root = planted_project(tmp_path)
    sample = root / "samples" / "mnist_mlp" / "sample"
    (sample / "grid_link.png").symlink_to(sample / "grid.png")  # a link inside the project (DVC's symlink cache)
    out = pictures(collect(PARAMS, root), root / "reports" / "img", root)
    assert [p["src"] for p in out["mnist_mlp"]] == ["img/mnist_mlp/grid.png", "img/mnist_mlp/grid_link.png"]
    assert (root / "reports" / "img" / "mnist_mlp" / "grid.png").read_bytes() == (sample / "grid.png").read_bytes()
    (sample / "notes.png").write_text("name,value\n")
    with pytest.raises(BadFile, match=r"sample/notes\.png: refused: not a PNG .*dvc repro -f sample@mnist_mlp"):
        pictures(collect(PARAMS, root), root / "reports" / "img", root)


def test_a_loss_name_that_would_leave_reports_is_refused(tmp_path):
    root = planted_project(tmp_path, loss="x/../../evil")
    with pytest.raises(BadFile, match=r"mnist_mlp/eval\.json: refused: its loss 'x/\.\./\.\./evil' is none of the "
                                      r"pipeline's \(bce, mse"):
        collect(PARAMS, root)


def test_a_run_id_that_is_not_one_is_refused(tmp_path):
    from ganlab.tracking.runs import check_training_run

    (tmp_path / "train.json").write_text(json.dumps({"run_id": "../../../etc", "steps": 1}))
    with pytest.raises(BadFile, match=r"train\.json: refused: its run_id '\.\./\.\./\.\./etc' is not an MLflow run"):
        check_training_run(TrackingCfg(uri=f"sqlite:///{tmp_path / 'mlflow.db'}"), tmp_path / "train.json")


# --------------------------------------------------------------------------------------------------- 4. temporaries
def test_links_planted_at_the_writers_temp_names_are_not_followed(tmp_path):
    """The old scheme's name is `<dest>.ganlab-tmp-<host>-<pid>`: a link there made the write land on its target."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    dest = tmp_path / "out.json"
    planted = tmp_path / f"out.json{TMP_MARK}{socket.gethostname()}-{os.getpid()}"
    planted.symlink_to(victim)
    atomic_write(dest, "new")
    assert dest.read_text() == "new" and victim.read_text() == "keep" and planted.is_symlink()
    a, b = temp_path(dest), temp_path(dest)  # new names: random, created exclusively, readable as open() makes them
    try:
        assert a != b and a.is_file() and not a.is_symlink() and a.name.startswith(planted.name + ".")
        mask = os.umask(0o022)
        os.umask(mask)
        assert stat.S_IMODE(a.stat().st_mode) == 0o666 & ~mask
    finally:
        a.unlink(), b.unlink()


def test_the_same_tensors_save_to_the_same_bytes(tmp_path):
    """A stage that reruns with the same weights leaves the same file, so DVC does not rerun what follows it: two
    processes save the same tensors (the archive's folder was named after the writer's temporary file, which
    carries the process id)."""
    import hashlib
    import sys

    import torch

    from ganlab.io import load_tensors

    save = ("import sys, torch; from ganlab.io import atomic_torch_save; "
            "atomic_torch_save({'net': 'cnn', 'state': {'w': torch.arange(6.0).reshape(2, 3)}}, sys.argv[1])")
    for d in ("a", "b"):
        subprocess.run([sys.executable, "-c", save, str(tmp_path / d / "cnn.pt")], env=env(), check=True)
    a, b = ((tmp_path / d / "cnn.pt").read_bytes() for d in ("a", "b"))
    assert hashlib.md5(a).hexdigest() == hashlib.md5(b).hexdigest()
    assert torch.equal(load_tensors(tmp_path / "a" / "cnn.pt")["state"]["w"], torch.arange(6.0).reshape(2, 3))


def test_dead_writers_new_style_temporaries_are_removed_and_live_ones_kept(tmp_path):
    host = socket.gethostname()
    dead = tmp_path / f"out.json{TMP_MARK}{host}-999999.k3x_9a2q"
    live = tmp_path / f"out.json{TMP_MARK}{host}-{os.getppid()}.abcdefgh"
    for p in (dead, live):
        p.write_text("half")
    atomic_write(tmp_path / "out.json", "{}")
    assert not dead.exists() and live.exists()


def test_the_sweep_job_clones_into_a_fresh_unpredictable_folder(tmp_path):
    """sweep.sbatch used /tmp/ganlab-sweep-<job>-<task>, and rm -rf'ed whatever was there. A fake git records
    where the task clones; what was planted under the old name is left alone."""
    bin_dir, work = tmp_path / "bin", tmp_path / "shared"
    bin_dir.mkdir(), work.mkdir()
    (bin_dir / "git").write_text('#!/bin/sh\necho "$6" > "$RECORD"; ls -A "$6" >> "$RECORD"\n')
    (bin_dir / "ganlab").write_text("#!/bin/sh\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    planted = work / "ganlab-sweep-7-1"
    planted.mkdir()
    (planted / "theirs").write_text("x")
    e = env() | {"PATH": f"{bin_dir}:{os.environ['PATH']}", "GANLAB_REPO": "/nowhere", "SLURM_ARRAY_JOB_ID": "7",
                 "SLURM_ARRAY_TASK_ID": "1", "GANLAB_SWEEP_WORKDIR": str(work), "RECORD": str(tmp_path / "rec")}
    subprocess.run(["bash", str(REPO / "docs" / "slurm" / "sweep.sbatch"), "s"], env=e, check=True, timeout=60)
    cloned_into, *listing = (tmp_path / "rec").read_text().splitlines()
    assert re.fullmatch(rf"{re.escape(str(planted))}\.\w{{8}}", cloned_into) and listing == []  # new and empty
    assert (planted / "theirs").exists() and not Path(cloned_into).exists()  # theirs kept, ours removed


def test_the_ci_sweep_passes_inputs_through_the_environment():
    workflow = yaml.safe_load((REPO / "docs" / "ci" / "github-sweep.yml").read_text())
    scripts = [step["run"] for job in workflow["jobs"].values() for step in job["steps"] if "run" in step]
    assert len(scripts) >= 4 and not [s for s in scripts if "${{" in s]


# --------------------------------------------------------------------------------------------------- 5. sizes
@pytest.mark.parametrize("path,value,shown,limit", [
    (("train", "batch_size"), 10 ** 15, "1_000_000_000_000_000", "batch_size"),
    (("variants", "mnist_vanilla", "model", "nz"), 10 ** 12, "1_000_000_000_000", "width"),
    (("variants", "mnist_mlp", "model", "g_hidden"), [1] * 70, "70 entries", "layers"),
    (("variants", "mnist_mlp", "model", "g_hidden"), [10 ** 9] * 5, r"1_000_000_000 \(5 entries over", "width"),
    (("variants", "mnist_dcgan64", "data", "image_size"), 10 ** 6, "1_000_000", "image_size"),
    (("eval", "n_samples"), 10 ** 12, "1_000_000_000_000", "samples"),
    (("train", "nproc"), 10 ** 6, "1_000_000", "processes"),
    (("classifier", "cnn", "batch_size"), 10 ** 9, "1_000_000_000", "batch_size"),
])
def test_a_size_no_machine_holds_is_refused_naming_key_value_and_limit(tmp_path, path, value, shown, limit):
    def edit(p):
        node = p
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    key = ".".join(path[-2:])
    with pytest.raises(ConfigError, match=rf"{re.escape(key)}(\[0\])? = {shown}.*above the limit [\d_]+ "
                                          rf"\(limits\.{limit}\).*raise limits\.{limit} in params\.yaml"):
        load_params(params_with(tmp_path, edit))


def test_a_limit_can_be_raised_in_params(tmp_path):
    def edit(p):
        p["train"]["nproc"] = 300
        p["limits"]["processes"] = 512
    assert load_params(params_with(tmp_path, edit)).variant("mnist_vanilla").train.nproc == 300


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    return uri, client, client.create_experiment("ganlab", artifact_location=(tmp / "artifacts").as_uri()), tmp


def log_model(store, name: str, config: dict, shape: list, generator: bytes) -> str:
    _, client, exp, tmp = store
    model = tmp / name
    model.mkdir()
    (model / "variant.json").write_text(json.dumps({"variant": "mnist_mlp", "data_shape": shape, "config": config}))
    (model / "generator.pt").write_bytes(generator)
    run_id = client.create_run(exp).info.run_id
    client.log_artifacts(run_id, str(model), "model")
    return run_id


def test_load_generator_checks_the_parameter_count_before_building(store):
    from ganlab.tracking.runs import load_generator

    cfg = PARAMS.variant("mnist_mlp").model_dump(mode="json")
    cfg["model"]["g_hidden"] = [16_384] * 60  # within width and layers; 16e9 parameters, 64 GB to build
    run_id = log_model(store, "huge", cfg, [1, 28, 28], b"tiny")
    with pytest.raises(BadFile, match=rf"run {run_id}, artifact model/generator\.pt: refused: the network in "
                                      r"variant\.json has 15,855,\d{3},\d{3} parameters, above the limit "
                                      r"500,000,000 \(limits\.parameters"):
        load_generator(run_id, TrackingCfg(uri=store[0]))
    shape = log_model(store, "shape", PARAMS.variant("mnist_mlp").model_dump(mode="json"), [1, 10 ** 6, 10 ** 6],
                      b"x")
    with pytest.raises(BadFile, match=r"variant\.json: refused: data_shape = \(1, 1000000, 1000000\)"):
        load_generator(shape, TrackingCfg(uri=store[0]))


def test_load_generator_refuses_weights_larger_than_their_network(store):
    from ganlab.tracking.runs import load_generator

    cfg = PARAMS.variant("mnist_mlp").model_dump(mode="json")
    run_id = log_model(store, "padded", cfg, [1, 28, 28], b"\0" * (2 << 20))
    small = LimitsCfg(file_bytes=1 << 20)
    with pytest.raises(BadFile, match=r"generator\.pt: refused: the store lists it at 2097152 bytes, above the cap "
                                      r"of 1,048,576 \(limits\.file_bytes"):
        load_generator(run_id, TrackingCfg(uri=store[0]), limits=small)
    cfg["model"]["g_hidden"], cfg["model"]["d_hidden"] = [2], [2]  # 2 x (100 + 1) + ... ~ 2,500 parameters
    tiny = log_model(store, "tiny", cfg, [1, 28, 28], b"\0" * (2 << 20))
    with pytest.raises(BadFile, match=r"generator\.pt: refused: 2,097,152 bytes, more than the 1,\d{3},\d{3} the "
                                      r"weights of the network in variant\.json take"):
        load_generator(tiny, TrackingCfg(uri=store[0]))


# --------------------------------------------------------------------------------------------------- 6. secrets
@pytest.mark.parametrize("path,url,points_at", [
    (("tracking", "uri"), "http://alice:s3cr3t@mlflow.lab:5000", "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_"),
    (("tracking", "uri"), "https://token@mlflow.lab", "MLFLOW_TRACKING_PASSWORD"),
    (("data", "mnist", "train_url"), "https://alice:s3cr3t@data.lab/mnist_train.csv", "~/.netrc"),
    (("data", "mnist", "idx_mirror"), "https://alice:s3cr3t@data.lab/mnist/", "~/.netrc"),
    (("data", "celeba", "url"), "https://alice:s3cr3t@data.lab/celeba.zip", "AWS_ACCESS_KEY_ID"),
])
def test_a_password_in_a_url_is_refused_without_repeating_it(tmp_path, path, url, points_at):
    def edit(p):
        node = p
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = url
    with pytest.raises(ConfigError) as err:
        load_params(params_with(tmp_path, edit))
    message = str(err.value)
    assert re.search(rf"{'.'.join(path)} = '\w+://\*\*\*@[\w.:]+.*user name or password", message), message
    assert points_at in message and "s3cr3t" not in message and "token@" not in message
