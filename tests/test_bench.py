"""The benchmark suite's own pieces: FLOP counting against the known count of a layer, and the timing harness."""

import json
import subprocess
import sys

import pytest
import torch

from helpers import REPO

sys.path.insert(0, str(REPO / "bench"))
from harness import measure  # noqa: E402
from run import book_baseline, count_flops, peak_flops, synthetic, variant  # noqa: E402


def test_flops_of_a_linear_layer_forward_and_backward():
    layer, x = torch.nn.Linear(300, 200), torch.randn(64, 300, requires_grad=True)
    assert count_flops(lambda: layer(x)) == 2 * 64 * 300 * 200  # one multiply-add per weight per row
    # backward: the gradients w.r.t. the input and the weight cost one more matmul each
    assert count_flops(lambda: layer(x).sum().backward()) == 3 * 2 * 64 * 300 * 200


def test_flops_of_a_convolution():
    conv, x = torch.nn.Conv2d(3, 8, 5), torch.randn(2, 3, 32, 32)
    out = 28 * 28  # (32 - 5 + 1)^2 output positions
    assert count_flops(lambda: conv(x)) == 2 * 2 * out * 8 * 3 * 5 * 5


def test_harness_takes_the_median_of_timed_windows_after_warm_up():
    ticks = iter([0.0, 1.0, 10.0, 12.0, 20.0, 24.0])  # windows of 1 s, 2 s and 4 s
    calls = []
    result = measure(lambda: calls.append(1) or 100, windows=3, warmup=2, clock=lambda: next(ticks))
    assert len(calls) == 5  # two untimed warm-up calls, three timed
    assert result == {"median": 50.0, "min": 25.0, "max": 100.0, "windows": 3}


def test_peak_table():
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16") == pytest.approx(989.4e12)
    assert peak_flops("NVIDIA H200", "fp32") == pytest.approx(494.7e12)
    assert peak_flops("cpu", "fp32") is None


def test_the_suite_runs_as_a_plain_script(tmp_path):
    """`bench/run.py --quick` end to end on CPU: every row measured (no configuration failed), JSON and table."""
    out = tmp_path / "cpu.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench/run.py"), "--quick", "--windows", "1", "--steps", "1",
                           "--workers", "0", "--threads", "2", "--out", str(out)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["rows"]
    book = ["book loop", "book loop, 1 thread", "ganlab before (autograd, foreach Adam)", "ganlab",
            "ganlab, fused: false (bitwise)"]
    assert [(r["suite"], r["variant"], r["run"]) for r in rows] == [
        ("batched", "mnist_mlp", "baseline (DataLoader loop)"), ("batched", "mnist_mlp", "ganlab"),
        ("batched", "mnist_mlp", "ganlab fp32 fast"), ("batched", "mnist_vanilla", "baseline (DataLoader loop)"),
        ("batched", "mnist_vanilla", "ganlab"), ("batched", "mnist_vanilla", "ganlab fp32 fast")] + [
        ("book", v, run) for v in ("mnist_mlp", "mnist_cgan") for run in book]
    assert all("error" not in r and r["images_per_s"]["median"] > 0 for r in rows)
    ours, books = rows[-2], rows[-5:-3]  # the ratio is against the faster book loop
    assert ours["vs_baseline"] == pytest.approx(ours["images_per_s"]["median"] /
                                                max(r["images_per_s"]["median"] for r in books))
    assert "| book | mnist_cgan | 1 | ganlab |" in proc.stdout


def test_book_baseline_runs_notebook_14s_networks():
    """The CelebA CNN book loop (the GPU suite's) on CPU: two faces, one book iteration each."""
    x = synthetic(variant("celeba_cnn", baseline_schedule=False), 2)
    assert book_baseline("celeba_cnn", x, torch.device("cpu"))() == 2
