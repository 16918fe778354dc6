"""Seeds trained together (ganlab.engine.joint): seed s of a joint run is the one-seed run with `train.seed: s`
(fp64 weights to 1e-9 after 200 steps, for every family and loss the joint path accepts), a killed joint run
resumes every seed exactly, and a diverging seed stops only itself. Tiny networks and data: seconds each."""

import pytest
import torch

from ganlab.config import load_params
from ganlab.data.toy import make_toy
from ganlab.engine import joint
from ganlab.engine.contract import RunPaths, Tracker
from ganlab.engine.train import fit
from helpers import REPO, write_mnist_h5

PARAMS = load_params(REPO / "params.yaml")
SEEDS = [3, 4]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("joint_data")
    write_mnist_h5(d / "mnist.h5", n_train=400)
    make_toy(PARAMS.data.toy, d)
    return d


def variant(name, model=None, **train):
    """The variant with tiny networks (MNIST: one hidden layer of 16) and a small grid, 200 steps in fp64."""
    cfg = PARAMS.variant(name)
    m = {"g_hidden": [16], "d_hidden": [16]} if name.startswith("mnist") else {}
    m.update(model or {})
    t = {"max_steps": 200, "device": "cpu", "precision": "fp64", "grid_size": 4, "log_every": 20,
         "checkpoint_every": 50, "threads": 1, **train}
    if cfg.train.batch_size > 1:
        t.setdefault("batch_size", 16)  # 25 steps an epoch on 400 digits
    return cfg.model_copy(update={"model": cfg.model.model_copy(update=m),
                                  "train": cfg.train.model_copy(update=t)})


def paths(root, data_dir, name):
    return lambda s: RunPaths(f"{name}/seed{s}", root, data_dir)


def state(root, name, s):
    d = root / "models" / name / f"seed{s}"
    return {**torch.load(d / "generator.pt"), **{"D." + k: v for k, v in torch.load(d / "discriminator.pt").items()}}


def assert_same(a, b, tol):
    assert a.keys() == b.keys()
    worst = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    assert worst <= tol, worst


CASES = [  # (variant, model changes): every fully connected family; the losses and BatchNorm ride along
    ("mnist_mlp", {}), ("mnist_cgan", {}), ("mnist_mlp_first", {}), ("pattern_1010", {}),
    ("mnist_vanilla", {"g_norm": "batchnorm", "d_norm": "batchnorm"}),  # per-seed BatchNorm statistics
    ("mnist_lsgan", {}), ("mnist_linear", {"loss": "wgan_gp", "gp_lambda": 10.0}), ("gaussian_2d", {"loss": "hinge"}),
]


@pytest.mark.parametrize("name,model", CASES, ids=[f"{n}-{'-'.join(map(str, m.values())) or 'source'}"
                                                   for n, m in CASES])
def test_joint_seed_is_the_one_seed_run(data_dir, tmp_path, name, model):
    """Seed 4, the stack's second row, against `fit` with train.seed 4 (fp64, 200 steps)."""
    cfg = variant(name, model, checkpoint_every=1000)
    assert joint.supported(cfg) is None
    out = joint.fit_joint(cfg, name, SEEDS, paths(tmp_path / "joint", data_dir, name), lambda s: Tracker())
    assert sorted(out) == SEEDS and all(out[s]["status"] == "ok" and out[s]["steps"] == 200 for s in SEEDS)
    one = cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": 4})})
    fit(one, name, paths(tmp_path / "one", data_dir, name)(4))
    assert_same(state(tmp_path / "joint", name, 4), state(tmp_path / "one", name, 4), 1e-9)
    rows = [(tmp_path / run / "plots" / name / "seed4/losses.csv").read_text().splitlines() for run in ("joint", "one")]
    assert len(rows[0]) == len(rows[1]) > 5 and rows[0][-1].split(",")[:2] == rows[1][-1].split(",")[:2]
    a, b = (state(tmp_path / "joint", name, s) for s in SEEDS)
    assert not torch.equal(a["net.0.weight"], b["net.0.weight"])


class KillAt(Tracker):
    """Interrupts the run when a row at `step` is logged (after the checkpoint at 100 was written)."""

    def __init__(self, step):
        self.step = step

    def log_rows(self, rows):
        if any(r["step"] == self.step for r in rows):
            raise KeyboardInterrupt


def test_killed_joint_run_resumes_every_seed_exactly(data_dir, tmp_path):
    name = "mnist_mlp"
    cfg = variant(name, precision="fp32")
    whole = paths(tmp_path / "whole", data_dir, name)
    joint.fit_joint(cfg, name, SEEDS, whole, lambda s: Tracker())
    cut = paths(tmp_path / "cut", data_dir, name)
    with pytest.raises(KeyboardInterrupt):
        joint.fit_joint(cfg, name, SEEDS, cut, lambda s: KillAt(120))
    assert all(torch.load(cut(s).checkpoint)["progress"]["step"] == 100 for s in SEEDS)
    joint.fit_joint(cfg, name, SEEDS, cut, lambda s: Tracker())
    for s in SEEDS:  # bitwise, in fp32: the same stream of draws and the same kernels from the checkpoint on
        a, b = state(tmp_path / "whole", name, s), state(tmp_path / "cut", name, s)
        assert all(torch.equal(a[k], b[k]) for k in a)


class Ends(Tracker):
    def __init__(self):
        self.status = None

    def end(self, metrics, status):
        self.status = status


def test_a_diverging_seed_stops_only_itself(data_dir, tmp_path, monkeypatch):
    name = "mnist_vanilla"
    cfg = variant(name, max_steps=60)
    build = joint.build_gan

    def poisoned(c, shape, device):  # seed 4 starts with a NaN weight: its losses are NaN from the first step
        gan = build(c, shape, device)
        if c.train.seed == 4:
            with torch.no_grad():
                gan.D.net[0].weight[0, 0] = float("nan")
        return gan

    monkeypatch.setattr(joint, "build_gan", poisoned)
    trackers = {s: Ends() for s in SEEDS}
    out = joint.fit_joint(cfg, name, SEEDS, paths(tmp_path, data_dir, name), trackers.__getitem__)
    assert out[3]["status"] == "ok" and out[3]["steps"] == 60
    assert out[4]["status"] == "failed" and "d_loss became nan" in out[4]["error"], out[4]
    assert trackers[3].status == "FINISHED" and trackers[4].status == "FAILED"
    clean = state(tmp_path, name, 3)
    assert all(torch.isfinite(v).all() for v in clean.values())
    assert not (tmp_path / "models" / name / "seed4").exists()


def test_conv_families_say_why_they_train_one_after_another():
    why = joint.supported(PARAMS.variant("mnist_dcgan"))
    assert why and "cs231n_dcgan" in why
    with pytest.raises(ValueError, match="cannot train jointly"):
        joint.fit_joint(PARAMS.variant("mnist_dcgan"), "mnist_dcgan", [0, 1], None, None)


def test_on_a_cpu_batch_1_seeds_train_one_after_another():
    """`worthwhile`: the measured CPU figures send every family to the sequential loop on a CPU (batch 1: slower
    jointly; batched: no arithmetic saved), with the reason."""
    assert "batch 1" in joint.worthwhile(variant("mnist_mlp"))
    assert "train.joint: on" in joint.worthwhile(variant("mnist_vanilla"))


def test_auto_trains_seeds_together_on_a_gpu(monkeypatch):
    """On a GPU `auto` takes the joint path for a family that allows it (the device is resolved as the stage
    resolves it; no GPU needed): the float32 scores of 10 seeds each way were not told apart (bench/README.md)."""
    monkeypatch.setattr(joint, "resolve_device", lambda device: torch.device("cuda"))
    assert joint.worthwhile(variant("mnist_vanilla")) is None
    assert joint.worthwhile(variant("mnist_mlp")) is None


@pytest.mark.parametrize("mode, together", [("auto", False), ("on", True), ("off", False)])
def test_fit_seeds_trains_together_as_train_joint_says(monkeypatch, capsys, mode, together):
    """The stage's fit_seeds hands the seeds to the joint path under `on` (a family that allows it), never under
    `off`, and under `auto` only where it pays (not on this CPU); the log says which and why."""
    from ganlab.engine import train

    calls = []
    monkeypatch.setattr(joint, "fit_joint", lambda cfg, name, seeds, *a: calls.append(seeds) or {})
    monkeypatch.setattr(train, "fit", lambda one, *a, **k: {"seed": one.train.seed})
    cfg = variant("mnist_vanilla")
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"joint": mode})})
    train.fit_seeds(cfg, "mnist_vanilla", [0, 1], lambda s: None, lambda s: None)
    assert calls == ([[0, 1]] if together else [])
    assert ("train together" in capsys.readouterr().err) == together
