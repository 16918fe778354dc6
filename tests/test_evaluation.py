"""Evaluation metrics against oracles, the evaluator's mode-collapse detectors on real digits, the seed experiments
and the book's appendix demos."""

import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torch.testing import assert_close

from conftest import write_zip
from ganlab.config import ClassifierRun, ConfigError, EvalCfg, load_params
from ganlab.data.celeba import pack_celeba
from ganlab.engine.contract import RunPaths
from ganlab.engine.gan import build_gan, generate
from ganlab.engine.train import fit
from ganlab.evaluation.classifier import Classifier, Evaluator, accuracy, fit_classifier
from ganlab.evaluation.evaluate import evaluate_variant, final_losses, inception_features, mnist_metrics
from ganlab.evaluation.metrics import (class_coverage, class_kl, class_shares, confidence_threshold, fid, frechet_distance, kid,
                            knn_distance, nn_memorization, precision_recall)
from ganlab.evaluation.sample import draw, interpolation_latents, seed_arithmetic
from ganlab.report.theory import ideal_losses, xy_game, xy_radius_growth
from helpers import REPO, mnist_digits, write_params

PARAMS = load_params(REPO / "params.yaml")


def gaussian(n, mean, cov, seed):
    g = np.random.default_rng(seed)
    return torch.from_numpy(g.multivariate_normal(mean, cov, size=n))


# --------------------------------------------------------------------------------------------------- FID, KID
def test_fid_of_a_set_against_itself_is_zero():
    x = gaussian(2000, np.zeros(8), np.eye(8) + 0.5, 0)
    assert_close(fid(x, x), 0.0, atol=1e-6, rtol=0)


def test_fid_grows_with_noise():
    a, b = gaussian(3000, np.zeros(8), np.eye(8), 0), gaussian(3000, np.zeros(8), np.eye(8), 1)
    g = torch.Generator().manual_seed(0)
    fids = [fid(a, b + s * torch.randn(b.shape, generator=g, dtype=b.dtype)) for s in (0.0, 0.5, 1.0, 2.0)]
    assert fids == sorted(fids) and fids[0] < 0.05 < fids[1], fids


def test_frechet_distance_equals_the_closed_form():
    # Diagonal covariances commute: the distance is |mu1 - mu2|^2 + sum (s1 - s2)^2, s = standard deviations.
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    s1, s2 = np.array([1.0, 2.0, 0.5]), np.array([3.0, 0.5, 0.5])
    expected = ((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum()
    assert_close(frechet_distance(mu1, np.diag(s1 ** 2), mu2, np.diag(s2 ** 2)), expected, rtol=1e-10, atol=1e-10)
    # Full covariances: against scipy's matrix square root of C1 C2.
    c1, c2 = np.array([[2.0, 0.8], [0.8, 1.0]]), np.array([[1.0, -0.3], [-0.3, 0.5]])
    oracle = ((mu1[:2] - mu2[:2]) ** 2).sum() + np.trace(c1 + c2 - 2 * scipy.linalg.sqrtm(c1 @ c2).real)
    assert_close(frechet_distance(mu1[:2], c1, mu2[:2], c2), oracle, rtol=1e-8, atol=1e-10)
    # And from samples: the fitted Gaussians approach it.
    a, b = gaussian(200_000, mu1[:2], c1, 0), gaussian(200_000, mu2[:2], c2, 1)
    assert_close(fid(a, b), oracle, rtol=0.02, atol=0.02)


def test_kid_is_unbiased_near_zero_for_one_distribution():
    g = torch.Generator().manual_seed(0)
    a, b = gaussian(2000, np.zeros(16), np.eye(16), 0), gaussian(2000, np.zeros(16), np.eye(16), 1)
    same, std = kid(a, b, 50, 500, g)
    assert abs(same) < 3 * std + 1e-4  # zero in expectation (the unbiased estimator can go negative)
    shifted, _ = kid(a, b + 1.0, 50, 500, g)
    assert shifted > 100 * abs(same) and shifted > 0.1


# --------------------------------------------------------------------------------------------------- neighbours
def test_chunked_knn_equals_the_whole_matrix():
    g = torch.Generator().manual_seed(0)
    q, r = torch.randn(70, 5, generator=g), torch.randn(90, 5, generator=g)
    whole = torch.cdist(q, r).topk(3, dim=1, largest=False).values[:, 2]
    assert_close(knn_distance(q, r, k=3, chunk=16), whole)


def test_precision_recall_of_real_against_real_and_far_away():
    a, b = gaussian(3000, np.zeros(2), np.eye(2), 0).float(), gaussian(3000, np.zeros(2), np.eye(2), 1).float()
    p, r = precision_recall(a, b, k=3, chunk=1000)
    assert_close(torch.tensor([p, r]), torch.ones(2), atol=0.06, rtol=0)
    assert precision_recall(a, b + 100.0, k=3, chunk=1000) == (0.0, 0.0)


def test_memorization_of_copies_and_of_fresh_samples():
    train = gaussian(3000, np.zeros(4), np.eye(4), 0).float()
    fresh = gaussian(1000, np.zeros(4), np.eye(4), 1).float()
    g = torch.Generator().manual_seed(0)
    assert nn_memorization(train[:500], train, 1000, g, chunk=700)[0] == 1.0  # copies are closer than any neighbour
    assert_close(nn_memorization(fresh, train, 1000, g, chunk=700)[0], 0.5, atol=0.07, rtol=0)


def test_class_histogram_detectors():
    assert class_coverage(np.full(10, 0.1), 0.02) == 10 and class_kl(np.full(10, 0.1)) == pytest.approx(0.0)
    one = np.eye(10)[3]
    assert class_coverage(one, 0.02) == 1 and class_kl(one) == pytest.approx(math.log(10))
    empty = class_shares(torch.zeros(0, dtype=torch.long), 10)  # every sample unrecognisable
    assert empty.tolist() == [0.0] * 10 and class_coverage(empty, 0.02) == 0 and class_kl(empty) is None


def test_confidence_threshold_keeps_the_asked_share_of_real_digits():
    conf = torch.linspace(0, 1, 1001)[torch.randperm(1001, generator=torch.Generator().manual_seed(0))]
    assert confidence_threshold(conf, 0.99) == pytest.approx(0.01, abs=1e-9)
    assert (conf >= confidence_threshold(conf, 0.9)).float().mean() == pytest.approx(0.9, abs=2e-3)


# --------------------------------------------------------------------------------------------------- the evaluator
@pytest.fixture(scope="module")
def digits():
    """Real digits (uint8 (N, 1, 28, 28)), 4,000 to train on and 1,000 held out, and an evaluator CNN trained on
    the 4,000 (8 epochs: about 0.94; the real 60,000-image run is the pipeline's)."""
    x, y = mnist_digits()
    x = torch.from_numpy(x[:, None].copy())
    y = torch.from_numpy(y)
    torch.manual_seed(0)
    net = fit_classifier(ClassifierRun(net="cnn", epochs=8, batch_size=64), x[:4000].float() / 255, y[:4000],
                         torch.Generator().manual_seed(0), "test")
    return x[:4000], x[4000:], y[4000:], Evaluator(net)


def test_collapsed_generator_covers_one_digit_and_real_images_ten(digits):
    train, test, y_test, evaluator = digits
    assert accuracy(evaluator.net, test.float() / 255, y_test) > 0.9
    cfg = EvalCfg(n_samples=500, kid_subsets=10, kid_subset_size=200)
    collapsed = test[7:8].expand(500, -1, -1, -1)  # one image, 500 times: the book's first GAN
    m = mnist_metrics(collapsed, None, test, train, evaluator, cfg)
    assert m["class_coverage"] == 1 and m["class_kl"] == pytest.approx(math.log(10))
    real = mnist_metrics(test[:500], None, test[500:], train, evaluator, cfg)
    assert real["class_coverage"] == 10 and real["class_kl"] < 0.05
    # Unsure readings: about 1 % of held-out real digits (the threshold keeps 99 % of the other 500), several times
    # more of two digits laid over each other, which the classifier cannot read as one; neither enters the histogram.
    assert 0.0 <= real["unrecognisable_share"] <= 0.04
    blends = ((test[:250].int() + test[250:500].flip(0).int()) // 2).to(torch.uint8)
    blended = mnist_metrics(blends.repeat(2, 1, 1, 1), None, test[500:], train, evaluator, cfg)
    assert blended["unrecognisable_share"] > max(0.1, 4 * real["unrecognisable_share"])  # 17 % in one run
    assert sum(blended["class_shares"]) == pytest.approx(1.0, abs=5e-4) and \
        blended["largest_class_share"] > 0.1  # abs: the sum of 10 shares rounded to 4 places
    assert blended["class_shares"] != blended["class_shares_all_samples"]
    assert real["fid_mnist"] < m["fid_mnist"] / 10 and real["precision"] > 0.5 and real["recall"] > 0.5
    assert 0.25 < real["nn_memorization"] < 0.75  # held-out digits are not copies of the training ones


def test_book_classifier_networks_have_the_books_shapes():
    counts = {k: sum(p.numel() for p in Classifier(k).parameters()) for k in ("mlp_sigmoid", "mlp_lrelu_ln", "cnn")}
    assert counts == {"mlp_sigmoid": 784 * 200 + 200 + 200 * 10 + 10, "mlp_lrelu_ln": 784 * 200 + 200 + 400 +
                      200 * 10 + 10, "cnn": 260 + 20 + 910 + 20 + 2510}
    assert Classifier("cnn").features(torch.zeros(2, 1, 28, 28)).shape == (2, 250)


# --------------------------------------------------------------------------------------------------- samples
def test_interpolation_endpoints_are_the_two_seeds_exactly():
    gan = build_gan(PARAMS.variant("mnist_mlp"), (1, 28, 28), torch.device("cpu"))
    seed1, seed2 = gan.latent(2)[0]
    z = interpolation_latents(seed1, seed2)
    assert z.shape == (12, 100) and torch.equal(z[0], seed1) and torch.equal(z[11], seed2)
    assert_close(z[5], seed1 + (seed2 - seed1) / 11 * 5)  # the book's formula
    images = draw(gan, z, None, context=None)
    # BLAS picks kernels by batch size, so compare with G on a batch of the same size holding one seed.
    assert torch.equal(images[0], generate(gan.G, seed1.expand(12, -1), None)[0])
    assert torch.equal(images[11], generate(gan.G, seed2.expand(12, -1), None)[0])
    assert seed_arithmetic(seed1, seed2).shape == (5, 100)


# --------------------------------------------------------------------------------------------------- theory
def test_xy_game_radius_grows_by_the_closed_form():
    path = xy_game((0.6, 0.7), 0.1, 499)
    r = np.hypot(path[:, 0], path[:, 1])
    n = np.arange(500)
    assert_close(torch.from_numpy(r), torch.from_numpy(r[0] * (1 + 0.1 ** 2) ** (n / 2)), rtol=1e-12, atol=0)
    assert_close(r[-1] / r[0], xy_radius_growth(0.1, 499))
    assert 11.9 < r[-1] / r[0] < 12.0  # the book's "about 12 times"


def test_ideal_losses_are_the_books():
    assert_close(ideal_losses(), {"bce": math.log(2), "mse": 0.25})


def test_final_losses_against_the_ideal(tmp_path):
    csv = tmp_path / "losses.csv"
    csv.write_text("step,epoch,d_loss,d_real,d_fake,d_gp,g_loss,d_x,d_gz\n" + "".join(
        f"{i},1,{2 * v},{v},{v},0,{v},0.5,0.5\n" for i, v in enumerate([9.0] * 9 + [0.7])))
    m = final_losses(csv, "bce", 0.1)
    assert m["final_rows"] == 1 and m["d_real"] == 0.7 and m["d_loss_per_term"] == pytest.approx(0.7)
    assert m["g_loss_vs_ideal"] == pytest.approx(0.7 - math.log(2))
    assert final_losses(csv, "lsgan", 0.1)["ideal"] == 0.125  # CS231n's halved squares at D = 1/2
    assert final_losses(csv, "hinge", 0.1)["ideal"] is None  # no equilibrium value is defined


# --------------------------------------------------------------------------------------------------- CelebA
def test_celeba_evaluation_without_inception(tmp_path, celeba_jpegs):
    """Pixel-space metrics on generated faces; Inception FID is null with the reason, never a number we made up."""
    data = tmp_path / "data"
    zip_path = write_zip(tmp_path / "img_align_celeba.zip", dict(list(celeba_jpegs.items())[:8]))
    pack_celeba(PARAMS.data.celeba.model_copy(update={"n_images": 8, "workers": 1}), zip_path, data)
    params = load_params(write_params(tmp_path / "params.yaml", lambda p: (
        p["train"].update(max_steps=1, batch_size=4, device="cpu"),
        p["eval"].update(n_samples=16, batch_size=8, kid_subsets=2, kid_subset_size=8, device="cpu"),
        p["eval"].update(inception_weights=str(tmp_path / "absent.pth")))))
    fit(params.variant("celeba_dcgan"), "celeba_dcgan", RunPaths.for_variant("celeba_dcgan", tmp_path, data))
    m = evaluate_variant(params, "celeba_dcgan", tmp_path, data)
    assert m["fid_pixels16"] > 0 and m["pixel_mean_dist"] >= 0 and 0 <= m["nn_memorization"] <= 1
    assert m["fid_inception"] is None and m["kid_inception"] is None and m["fid_inception_reason"]
    trained = json.loads((tmp_path / "metrics/celeba_dcgan/train.json").read_text())
    assert trained["epochs_done"] == 0.5 and trained["images_seen"] == 4  # one step of two, batch 4
    assert m["wall_time_per_epoch_s"] == pytest.approx(trained["wall_time_s"] / 0.5)
    assert m["seconds_per_image"] == pytest.approx(trained["wall_time_s"] / 4)
    assert inception_features(params.eval.model_copy(update={"inception": False}), torch.device("cpu"))[1] == \
        "disabled by eval.inception: false"


def test_evaluation_params_are_checked_at_the_edge(tmp_path):
    with pytest.raises(ConfigError, match=r"eval\.n_samples = 0: .*greater than or equal to 1"):
        load_params(write_params(tmp_path / "params.yaml", lambda p: p["eval"].update(n_samples=0)))
    with pytest.raises(ConfigError, match=r"classifier\.cnn\.net = 'resnet': .*'mlp_sigmoid', 'mlp_lrelu_ln' or 'cnn'"):
        load_params(write_params(tmp_path / "params.yaml", lambda p: p["classifier"]["cnn"].update(net="resnet")))
