"""evaluate@ and sample@ show their long work as progress bars on stderr (tqdm), so minutes of work are not
minutes of silence; stdout stays clean. Untrained networks on a few real digits: the bars, not the numbers."""

import re

import pytest
import torch

from ganlab.config import load_params
from ganlab.engine.gan import build_gan
from ganlab.evaluation.classifier import Classifier, Evaluator
from ganlab.evaluation.evaluate import mnist_samples, mnist_metrics
from ganlab.evaluation.sample import image_pictures
from ganlab.evaluation.sampling import scale_only
from helpers import mnist_digits, tiny_evaluation, write_params

VARIANT = "mnist_vanilla"


@pytest.fixture
def params(tmp_path):
    def edit(p):
        tiny_evaluation(p)
        p["eval"].update(n_samples=96, chunk=40, device="cpu")  # 96 samples, 3 × 3 blocks of distances

    return load_params(write_params(tmp_path / "params.yaml", edit))


def finished_bars(stderr: str) -> dict[str, str]:
    """desc -> "done/total" of each bar's last state (tqdm redraws a line with \\r)."""
    bars = {}
    for line in stderr.replace("\r", "\n").splitlines():
        if m := re.match(r"(.+?): +100%\|[^|]*\| (\d+/\d+) ", line):
            bars[m.group(1)] = m.group(2)
    return bars


def test_evaluate_shows_each_long_step(params, capfd):
    x, y = mnist_digits()
    images = torch.from_numpy(x[:, None])  # uint8 (N, 1, 28, 28)
    gan = build_gan(params.variant(VARIANT), (1, 28, 28), torch.device("cpu"))
    fake, asked = mnist_samples(gan, scale_only(params.variant(VARIANT).data), params.eval)
    mnist_metrics(fake, asked, images[:200], images[200:400], Evaluator(Classifier("cnn").eval()), params.eval)
    out, err = capfd.readouterr()
    assert out == ""
    bars = finished_bars(err)
    assert bars == {"generate": "96/96", "KID subsets": "10/10",
                    "precision: real radii": "25/25", "precision: fake in real": "15/15",
                    "recall: fake radii": "9/9", "recall: real in fake": "15/15",
                    "memorisation: real to train": "15/15", "memorisation: samples to train": "15/15"}, bars


def test_sample_shows_its_pictures(params, tmp_path, capfd):
    cfg = params.variant(VARIANT)
    gan = build_gan(cfg, (1, 28, 28), torch.device("cpu"))
    with torch.no_grad():
        paths = image_pictures(gan, scale_only(cfg.data), params.sample, tmp_path / "sample")
    out, err = capfd.readouterr()
    assert out == "" and len(paths) == 3
    assert finished_bars(err) == {"pictures": "3/3"}
