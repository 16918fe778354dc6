"""The training engine: the book's schedule against its own loop, learning, determinism, divergence (kills and
resumes: test_reliability.py)."""

import sys

import pandas
import pytest
import torch
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from torch.testing import assert_close

from conftest import write_zip
from ganlab.config import ConfigError, load_params
from ganlab.data.celeba import pack_celeba
from ganlab.data.load import load_dataset
from ganlab.data.toy import make_toy
from ganlab.engine.contract import RunPaths
from ganlab.engine.gan import GAN, build_gan, fixed_latent, generate
from ganlab.engine.mlp_steps import MlpSteps
from ganlab.engine.runners import GraphedSteps, Logger, Steps
from ganlab.engine.settings import run_dtype
from ganlab.engine.train import fit
from ganlab.evaluation.sampling import load_trained
from helpers import REPO, assert_trained, mnist_digits, run, stage_in_process, write_mnist_h5, write_params

sys.path.insert(0, str(REPO / "bench"))
from baselines import book_loop  # noqa: E402

PARAMS = load_params(REPO / "params.yaml")


def variant(name, **train):
    cfg = PARAMS.variant(name)
    return cfg.model_copy(update={"train": cfg.train.model_copy(update=train)})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, celeba_jpegs):
    """Every processed set, tiny: real MNIST digits, the toy sets, and CelebA packed by the real packing code
    from generated 178x218 JPEGs (celeba.h5 128x128 crops, celeba_full.h5 218x178 frames)."""
    d = tmp_path_factory.mktemp("data")
    write_mnist_h5(d / "mnist.h5")
    make_toy(PARAMS.data.toy, d)
    zip_path = write_zip(d / "img_align_celeba.zip", dict(list(celeba_jpegs.items())[:8]))
    pack_celeba(PARAMS.data.celeba.model_copy(update={"n_images": 8, "workers": 1}), zip_path, d)
    return d


def train(cfg, name, root, data_dir):
    return fit(cfg, name, RunPaths.for_variant(name, root, data_dir))


def weights(root, name):
    return torch.load(root / "models" / name / "generator.pt")


def test_batch1_schedule_is_the_books_loop(data_dir, tmp_path):
    """ganlab's `split` schedule at batch 1 against notebook 08's loop: same seeds, same order, same weights."""
    n = 60
    cfg = variant("mnist_mlp", max_steps=n, device="cpu")
    gan: GAN = build_gan(cfg, (1, 28, 28), torch.device("cpu"))
    D, G = book_loop.Discriminator(), book_loop.Generator()
    for ours, theirs in ((gan.D, D), (gan.G, G)):  # same initial weights, parameter for parameter
        for p, q in zip(ours.parameters(), theirs.model.parameters(), strict=True):
            q.data.copy_(p.data)
    x, y = mnist_digits()
    frame = pandas.DataFrame(
        torch.cat([torch.from_numpy(y[:4000, None]), torch.from_numpy(x[:4000].reshape(-1, 784)).long()], 1).numpy())
    rng = torch.Generator().manual_seed(cfg.train.seed)  # the engine draws its seeds from this generator
    book_loop.train_gan(D, G, book_loop.MnistDataset(frame), limit=n,
                        seed_fn=lambda size: torch.randn(1, size, generator=rng)[0])
    train(cfg, "mnist_mlp", tmp_path, data_dir)
    ours = weights(tmp_path, "mnist_mlp")
    # ours ends in Unflatten, theirs in Sigmoid: compare the parameters in order. BCE-with-logits and
    # Sigmoid+BCELoss differ in the last bits, hence the tolerance.
    for p, q in zip(ours.values(), G.model.state_dict().values(), strict=True):
        assert_close(p, q, rtol=1e-4, atol=1e-5)
    assert not torch.equal(ours["net.0.weight"], gan.G.net[0].weight)  # training moved the weights


def test_pattern_1010_learns(data_dir, tmp_path):
    """The book's 10,000 batch-1 iterations: positions 1 and 3 end above 0.8, positions 2 and 4 below 0.2."""
    metrics = train(variant("pattern_1010", device="cpu"), "pattern_1010", tmp_path, data_dir)
    last = (tmp_path / "samples/pattern_1010/progress/epoch_010.csv").read_text().split("\n")[0]
    out = [float(v) for v in last.split(",")]
    assert out[0] > 0.8 and out[2] > 0.8 and out[1] < 0.2 and out[3] < 0.2, out
    assert metrics["steps"] == 10_000
    # D settles near the MSE equilibrium, 0.25 for each of its two terms (book: "D loss settles at 0.25")
    rows = pandas.read_csv(tmp_path / "plots/pattern_1010/losses.csv")
    assert rows["d_real"].tail(100).mean() == pytest.approx(0.25, abs=0.06)
    assert rows["d_fake"].tail(100).mean() == pytest.approx(0.25, abs=0.06)


@pytest.mark.parametrize("name", ["mnist_cgan", "mnist_dcgan", "mnist_wgan_gp"])
def test_same_params_same_weights(data_dir, tmp_path, name):
    cfg = variant(name, max_steps=12, batch_size=8, checkpoint_every=5, device="cpu")
    train(cfg, name, tmp_path / "a", data_dir)
    train(cfg, name, tmp_path / "b", data_dir)
    a, b = weights(tmp_path / "a", name), weights(tmp_path / "b", name)
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": 1})})
    train(other, name, tmp_path / "c", data_dir)
    assert not torch.equal(a["net.0.weight"], weights(tmp_path / "c", name)["net.0.weight"])


def stage(root, data_dir, name):
    """The stage's command line; run it with cwd=root so its MLflow store is root/mlruns."""
    return [sys.executable, str(REPO / "stages/train.py"), name, "--params", str(root / "params.yaml"),
            "--data-dir", str(data_dir), "--root", str(root)]


def test_divergence_stops_with_a_clear_error(data_dir, tmp_path):
    def edit(p):
        p["train"].update(max_steps=40, optimizer="sgd", lr_d=1e30, lr_g=1e30, log_every=5, device="cpu")
    write_params(tmp_path / "params.yaml", edit)
    proc = run(stage(tmp_path, data_dir, "mnist_lsgan"), tmp_path, check=False)
    assert proc.returncode == 1
    assert "train@mnist_lsgan: error: mnist_lsgan: d_loss became" in proc.stderr
    assert "lower the learning rates" in proc.stderr
    assert not (tmp_path / "models" / "mnist_lsgan").exists()


@pytest.fixture(scope="module")
def train_stage(tmp_path_factory):
    """stages/train.py's main, run in this process (the stage's code as it is, without a Python start per variant)
    against one MLflow store for the module: {"store": path, "main": callable(argv, cwd) -> exit code}."""
    store = tmp_path_factory.mktemp("mlruns")

    def call(argv, cwd):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
            return stage_in_process("train.py", argv, cwd)
    return {"store": store, "main": call}


# The CelebA variants take the same path through `dvc repro` in test_pipeline.py::test_celeba_branch (train@,
# evaluate@ and sample@ of each, with the same checks of what training wrote): training them here too would train
# the suite's slowest networks twice.
@pytest.mark.parametrize("name", sorted(v for v in PARAMS.variants if not v.startswith("celeba")))
def test_every_variant_smoke_through_the_stage(data_dir, tmp_path, name, train_stage):
    def edit(p):
        p["train"].update(max_steps=3, batch_size=2, log_every=1, device="cpu")
    write_params(tmp_path / "params.yaml", edit)
    assert train_stage["main"]([name, "--params", str(tmp_path / "params.yaml"), "--data-dir", str(data_dir),
                                "--root", str(tmp_path)], tmp_path) == 0
    client = MlflowClient(f"sqlite:///{train_stage['store'] / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ganlab").experiment_id],
                              filter_string=f"tags.variant = '{name}'", run_view_type=ViewType.ALL)
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert_trained(tmp_path, name, PARAMS.variant(name), steps=3, batch_size=2)


@pytest.mark.parametrize("drop_last,steps,images,epochs", [
    (True, 4, 16, 2.0),  # 10 images, batch 4: two full batches an epoch, the partial one dropped
    (True, 3, 12, 1.5),
    (False, 6, 20, 2.0),  # three batches an epoch, the last of 2 images
    (False, 4, 14, 4 / 3)])
def test_steps_images_and_epochs_as_trained(drop_last, steps, images, epochs):
    from ganlab.engine.train import images_trained, plan
    cfg = variant("mnist_vanilla", batch_size=4, drop_last=drop_last, epochs=9)
    per_epoch, _ = plan(cfg, 10)
    assert images_trained(cfg, 10, per_epoch, steps) == images
    assert steps / per_epoch == pytest.approx(epochs)


# --------------------------------------------------------------------------------------------------- speed settings
CPU = torch.device("cpu")


def run_steps(cfg, data_dir, runner, n):
    """n iterations of one step runner on the variant's data; the weights and the log rows (one per 5 steps)."""
    data = load_dataset(cfg.data, data_dir, CPU)
    gan = build_gan(cfg, data.shape, CPU)
    log = Logger("test", CPU)
    steps = runner(gan, data, log)
    perm, b, rows = torch.randperm(len(data), generator=torch.Generator().manual_seed(1)), cfg.train.batch_size, []
    for k in range(n):
        steps(perm[k * b:(k + 1) * b], g_step=(k + 1) % cfg.train.n_critic == 0)
        if (k + 1) % 5 == 0:
            rows.append(log.flush(k + 1, 1))
    return {**gan.G.state_dict(), **gan.D.state_dict()}, rows


# The book's batch-1 MLP (split D steps, fresh seeds, Adam), SGD on the 1010 pattern, labels (cgan), BatchNorm with
# the tutorial's reused fake batch (dcgan64), and the penalty with n_critic 5 (two kinds of iteration).
@pytest.mark.parametrize("name,batch", [("mnist_mlp", 1), ("pattern_1010", 1), ("mnist_cgan", 1),
                                        ("mnist_dcgan64", 2), ("mnist_wgan_gp", 2)])
def test_graphed_steps_give_the_plain_steps_weights(data_dir, name, batch):
    """GraphedSteps without the capture (CPU): static inputs, warm-up iterations and the in-place restore of
    models, optimisers and sums, then the same iterations: the weights and logs of the plain path, bit for bit."""
    cfg = variant(name, batch_size=batch, device="cpu")
    plain, plain_rows = run_steps(cfg, data_dir, Steps, 15)
    graphed, graphed_rows = run_steps(cfg, data_dir, lambda *a: GraphedSteps(*a, capture=False), 15)
    assert plain.keys() == graphed.keys()
    assert all(torch.equal(plain[k], graphed[k]) for k in plain)
    assert plain_rows == graphed_rows
    untrained = {**build_gan(cfg, load_dataset(cfg.data, data_dir, CPU).shape, CPU).G.state_dict()}
    assert any(not torch.equal(untrained[k], plain[k]) for k in untrained), "the steps did not train G"


# The book's batch-1 MLP with either optimiser kernel, the cGAN's labels, SGD + MSE + sigmoid (the first attempt,
# the 1010 pattern), a G step every other iteration, and a batch of 4 (the D steps' batch sums).
@pytest.mark.parametrize("name,train", [("mnist_mlp", {}), ("mnist_mlp", {"fused": True}), ("mnist_cgan", {}),
                                        ("mnist_mlp_first", {}), ("pattern_1010", {}), ("mnist_mlp", {"n_critic": 2}),
                                        ("mnist_mlp", {"batch_size": 4})])
def test_hand_written_mlp_step_gives_the_autograd_weights(data_dir, name, train):
    """MlpSteps (`engine: auto` for these variants) against the autograd step: the same weights and log rows, bit
    for bit at batch 1; at batch 4 within 1e-6 (sums over the batch may round in another order)."""
    cfg = variant(name, device="cpu", **{"batch_size": 1} | train)
    plain, plain_rows = run_steps(cfg, data_dir, Steps, 20)
    manual, manual_rows = run_steps(cfg, data_dir, MlpSteps, 20)
    assert plain.keys() == manual.keys()
    assert_close(manual, plain, rtol=0, atol=1e-6)
    if cfg.train.batch_size == 1:
        assert all(torch.equal(plain[k], manual[k]) for k in plain)
        assert manual_rows == plain_rows
    untrained = build_gan(cfg, load_dataset(cfg.data, data_dir, CPU).shape, CPU).G.state_dict()
    assert any(not torch.equal(untrained[k], manual[k]) for k in untrained), "the steps did not train G"


@pytest.mark.parametrize("name", ["mnist_mlp", "mnist_cgan"])
def test_book_mode_defaults_keep_the_books_adam_weights(data_dir, name):
    """The variants as params.yaml has them (hand-written step, fused Adam) against the autograd step with the
    book's multi-tensor Adam: equal weights to 1e-6 after 300 batch-1 steps."""
    cfg = variant(name, device="cpu")
    assert cfg.train.fused and cfg.train.engine == "auto"
    book, _ = run_steps(variant(name, device="cpu", fused=False, engine="autograd"), data_dir, Steps, 300)
    ours, _ = run_steps(cfg, data_dir, MlpSteps, 300)
    assert_close(ours, book, rtol=0, atol=1e-6)
    assert any(not torch.equal(ours[k], book[k]) for k in ours)  # another kernel: not bit for bit


def test_engine_manual_where_it_cannot_run_is_a_clear_error(data_dir, tmp_path):
    with pytest.raises(ConfigError, match="train.engine is 'manual' but .* train.d_update is 'joint'"):
        train(variant("mnist_vanilla", device="cpu", engine="manual", max_steps=2), "mnist_vanilla", tmp_path,
              data_dir)
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("setting", ["fused", "compile"])
def test_speed_setting_keeps_the_maths(data_dir, setting):
    """The fused optimiser and torch.compile run other kernels: the same weights to float tolerance, and the
    checkpoint keys of the plain modules (a compiled run's models load anywhere)."""
    cfg = variant("mnist_mlp", batch_size=8, device="cpu")
    plain, plain_rows = run_steps(cfg, data_dir, Steps, 10)
    fast, fast_rows = run_steps(variant("mnist_mlp", batch_size=8, device="cpu", **{setting: True}),
                                data_dir, Steps, 10)
    assert plain.keys() == fast.keys()
    assert_close(fast, plain, rtol=1e-4, atol=1e-5)
    assert_close([r["d_loss"] for r in fast_rows], [r["d_loss"] for r in plain_rows], rtol=1e-4, atol=1e-5)


def test_fp64_runs_in_float64_from_the_fp32_weights(data_dir, tmp_path):
    """`precision: fp64` starts from the fp32 run's initial weights (cast), trains in float64 (weights, data,
    noise), stays within float32 rounding of the fp32 run over a few SGD steps, and leaves torch's default
    dtype as it found it."""
    cfg32, cfg64 = (variant("mnist_vanilla", batch_size=8, max_steps=3, optimizer="sgd", device="cpu",
                            precision=p) for p in ("fp32", "fp64"))
    shape = load_dataset(cfg32.data, data_dir, CPU).shape
    g32 = build_gan(cfg32, shape, CPU).G.state_dict()
    with run_dtype("fp64"):  # as fit sets it for an fp64 run
        g64 = build_gan(cfg64, shape, CPU).G.state_dict()
    assert {t.dtype for t in g64.values()} == {torch.float64}
    assert all(torch.equal(g64[k], g32[k].double()) for k in g32)
    train(cfg64, "mnist_vanilla", tmp_path / "64", data_dir)
    assert torch.get_default_dtype() == torch.float32
    train(cfg32, "mnist_vanilla", tmp_path / "32", data_dir)
    w64, w32 = weights(tmp_path / "64", "mnist_vanilla"), weights(tmp_path / "32", "mnist_vanilla")
    assert {t.dtype for t in w64.values()} == {torch.float64}
    # sample and evaluate rebuild the generator in float32 and load these weights into it
    gan = load_trained(cfg64, tmp_path / "64" / "models" / "mnist_vanilla", shape, CPU)
    assert generate(gan.G, *fixed_latent(gan)).dtype == torch.float32
    worst = max((w64[k] - w32[k].double()).abs().max().item() for k in w32)
    assert 0 < worst < 1e-5  # other rounding, the same maths


def test_cuda_graph_without_a_gpu_is_a_clear_error(data_dir, tmp_path):
    with pytest.raises(ConfigError, match="train.cuda_graph is true but training runs on cpu"):
        train(variant("mnist_mlp", device="cpu", cuda_graph=True, max_steps=2), "mnist_mlp", tmp_path, data_dir)
    assert not (tmp_path / "models").exists()


def test_mnist_dcgan64_can_draw_white_and_the_blog_codes_scaling_cannot(data_dir):
    """Default [-1, 1]: a white pixel is 1, the top of G's Tanh, and the trained G's samples span [-1, 1]'s scale.
    The blog code's Normalize(0.1307, 0.3081) (kept as an option) puts white at 2.82, out of Tanh's reach: G's
    largest output maps back to 0.439 in pixels. The default trains on the training digits only (held-out test
    digits for evaluate); the option `split: all` is the post's 70,000."""
    cfg = variant("mnist_dcgan64", device="cpu", batch_size=4)
    data = load_dataset(cfg.data, data_dir, CPU)
    real = data.scale(data.x[:256])
    assert real.min() == -1.0 and 0.99 <= real.max() <= 1.0
    assert data.unscale(torch.tensor([-1.0, 1.0])).tolist() == [0.0, 1.0]
    gan, _ = run_steps_gan(cfg, data_dir, 3)
    samples = generate(gan.G, *fixed_latent(gan))
    assert samples.shape[1:] == (1, 64, 64) and -1.0 <= samples.min() < 0.0 < samples.max() <= 1.0
    assert data.unscale(samples).max() > 0.5  # the standardised scale could not pass 0.439

    blog = cfg.data.model_copy(update={"scale": "standardize", "mean": 0.1307, "std": 0.3081, "split": "all"})
    post = load_dataset(blog, data_dir, CPU)
    assert len(post) == len(data) + len(load_dataset(cfg.data.model_copy(update={"split": "test"}), data_dir, CPU))
    assert post.scale(post.x[:256]).max().item() == pytest.approx((post.x[:256].max().item() / 255 - 0.1307) / 0.3081)
    assert post.unscale(torch.tensor(1.0)).item() == pytest.approx(1 * 0.3081 + 0.1307)  # 0.4388: never white
    assert post.unscale(samples).max() <= 0.4389


def run_steps_gan(cfg, data_dir, n):
    data = load_dataset(cfg.data, data_dir, CPU)
    gan = build_gan(cfg, data.shape, CPU)
    log = Logger("test", CPU)
    steps = Steps(gan, data, log)
    for k in range(n):
        steps(torch.arange(k * cfg.train.batch_size, (k + 1) * cfg.train.batch_size), g_step=True)
    return gan, log
