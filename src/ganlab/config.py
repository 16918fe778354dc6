"""Typed configuration: params.yaml is parsed here, once, and nowhere else.

Every section is a pydantic model with `extra="forbid"`, so a misspelt key is an error, and every value is checked
against what is allowed. `ConfigError` carries one line per problem, naming the key, the value and what is allowed.

A variant's configuration is `variants.<name>` with the global `model:` and `train:` overrides laid over it: a
non-null global key wins over the same key in every variant it applies to, so `dvc exp run -S model.loss=bce`
changes every variant at once. Where a global key replaces a different value that a variant sets itself,
`Params.masking` says so (the train stage prints it, check_params lists them all).

One file, over 300 lines, on purpose: it is the schema of params.yaml, section by section in the file's order, and
every stage loads all of it (`load_params`); split, a reader would hop between files to follow one key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union
from urllib.parse import urlparse

import yaml
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model,
                      field_validator, model_validator)

PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]

URL_SCHEMES = ("http", "https")
CELEBA_HEIGHT, CELEBA_WIDTH = 218, 178  # img_align_celeba frames are 178 wide x 218 high


class ConfigError(ValueError):
    """params.yaml is wrong; the message says where, what and what is allowed."""


class Strict(BaseModel):
    # allow_inf_nan=False: `.inf`, `.nan` (and "inf", "nan") are refused for every float of every section.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# A user name or password in a URL would sit in params.yaml, in every pushed experiment and in the report's header
# (uploaded to MLflow): each client reads its secrets from the environment (or ~/.netrc) instead.
DATA_SECRETS = ("put the credentials in ~/.netrc (machine <host> login <user> password <secret>), which the "
                "downloader (requests) reads; for an S3 store, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
TRACKING_SECRETS = ("set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) in the "
                    "environment, which MLflow reads; its S3 artifact store reads AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY")


def _no_userinfo(value: str, how: str) -> None:
    if "@" in urlparse(value).netloc:
        raise ValueError(f"the URL holds a user name or password (before '@'), which would be stored in "
                         f"params.yaml, every pushed experiment and the report; remove it and {how}")


def _check_url(value: Optional[str]) -> Optional[str]:
    if value is None:
        return value
    scheme = urlparse(value).scheme
    if scheme not in URL_SCHEMES:
        raise ValueError(f"URL scheme {scheme!r} is not supported; use one of {', '.join(URL_SCHEMES)}")
    _no_userinfo(value, DATA_SECRETS)
    return value


Url = Annotated[str, Field(min_length=1), AfterValidator(_check_url)]


def _check_device(v: str) -> str:
    if v not in ("auto", "cpu", "cuda", "mps") and not (v.startswith("cuda:") and v[5:].isdigit()):
        raise ValueError(f"device {v!r} is not one of auto, cpu, cuda, cuda:N, mps")
    return v


Device = Annotated[str, AfterValidator(_check_device)]


# --------------------------------------------------------------------------------------------------- data stages
class DownloadCfg(Strict):
    connect_timeout: PosFloat = 10.0
    read_timeout: PosFloat = 60.0
    retries: NonNegInt = 5  # extra attempts after the first, on connection errors and 5xx
    backoff: NonNegFloat = 1.0  # seconds; doubled after every failed attempt
    chunk_bytes: PosInt = 1 << 20
    # The most bytes a server may send for a file whose size is not in params (with `size` set, that size is the
    # cap); a larger answer is refused before or while it arrives, so a hostile server cannot fill the disk.
    max_bytes: PosInt = 4 << 30


class MnistDataCfg(Strict):
    train_url: Url
    test_url: Url
    train_sha256: Optional[str] = None
    test_sha256: Optional[str] = None
    train_rows: PosInt = 60_000
    test_rows: PosInt = 10_000
    idx_mirror: Url
    idx_md5: dict[str, str]  # file name -> md5, as torchvision lists them

    @field_validator("idx_md5")
    @classmethod
    def _four_idx_files(cls, v: dict[str, str]) -> dict[str, str]:
        need = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}
        if set(v) != need:
            raise ValueError(f"must name exactly the four IDX files {sorted(need)}, got {sorted(v)}")
        return v


class CelebaDataCfg(Strict):
    url: Optional[Url] = None  # when null, Google Drive file `gdrive_id`
    gdrive_id: str = "0B7EVK8r0v71pZjFTYXZWM3FlRnM"
    md5: Optional[str] = "00d2c5bc6d35e252742224ab0c1e8fcb"
    size: Optional[PosInt] = 1_443_490_838
    n_images: PosInt = 20_000
    crop: Optional[PosInt] = 128  # centre crop; null keeps the full 218x178 frame
    skip_corrupt: bool = False
    workers: Optional[PosInt] = None  # JPEG decoding threads; null = all cores
    compression: Literal["none", "lzf", "gzip"] = "none"
    compression_level: Annotated[int, Field(ge=0, le=9)] = 4  # gzip only
    # Decompression-bomb caps, checked before anything is decoded: a zip entry larger than max_entry_bytes (its
    # aligned JPEGs are ~10 KB) or an image declaring more than max_pixels pixels (the frame has 38,804) is
    # treated as a corrupt image (skipped and counted with skip_corrupt, else an error).
    max_entry_bytes: PosInt = 1 << 20
    max_pixels: PosInt = 1_000_000

    @field_validator("crop")
    @classmethod
    def _crop_fits(cls, v: Optional[int]) -> Optional[int]:
        if v is not None and v > min(CELEBA_HEIGHT, CELEBA_WIDTH):
            raise ValueError(f"a {v}x{v} crop is larger than the {CELEBA_WIDTH}x{CELEBA_HEIGHT} CelebA image; "
                             f"use at most {min(CELEBA_HEIGHT, CELEBA_WIDTH)}, or null for the full frame")
        return v


class ToyDataCfg(Strict):
    seed: NonNegInt = 0
    pattern_1010_size: PosInt = 1000
    gaussian_2d_size: PosInt = 1000


class DataCfg(Strict):
    mnist: MnistDataCfg
    celeba: CelebaDataCfg
    toy: ToyDataCfg = ToyDataCfg()
    download: DownloadCfg = DownloadCfg()


# --------------------------------------------------------------------------------------------------- variants
Act = Literal["sigmoid", "relu", "lrelu", "tanh", "gelu"]
Norm = Literal["none", "layernorm", "batchnorm"]
LOSSES = ("bce", "mse", "lsgan", "wgan_gp", "hinge")


class VariantData(Strict):
    dataset: Literal["pattern_1010", "gaussian_2d", "mnist", "celeba", "celeba_full"]
    split: Literal["train", "test", "all"] = "train"  # mnist: which images; `all` = train then test
    limit: Optional[PosInt] = None  # keep only the first `limit` images (CS231n trains on the first 50,000)
    image_size: Optional[PosInt] = None  # resize images to this square size
    scale: Literal["unit", "symmetric", "standardize"] = "unit"  # [0,1], [-1,1], or (x/255 - mean) / std
    mean: float = 0.0
    std: PosFloat = 1.0


class ModelCommon(Strict):
    """The keys every network family takes. `gp_lambda` belongs to the `wgan_gp` loss: it is filled with 10 when
    that loss is chosen without it, and setting it with another loss is an error (it would change nothing)."""

    loss: Literal[LOSSES] = "bce"  # type: ignore[valid-type]
    latent: Literal["const", "rand", "randn", "uniform"] = "randn"  # const = 0.5 (the book's 1010 GAN)
    nz: PosInt = 100
    init: Literal["default", "xavier", "dcgan", "normal"] = "default"
    gp_lambda: Optional[NonNegFloat] = None  # wgan_gp only; null there means 10 (Gulrajani et al.)

    @model_validator(mode="before")
    @classmethod
    def _gp_default(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and raw.get("loss") == "wgan_gp" and raw.get("gp_lambda") is None:
            return {**raw, "gp_lambda": 10.0}
        return raw

    @model_validator(mode="after")
    def _gp_used(self) -> "ModelCommon":
        if self.gp_lambda is not None and self.loss != "wgan_gp":
            raise ValueError(f"gp_lambda={self.gp_lambda} is used by the wgan_gp loss only, and this model's loss "
                             f"is {self.loss!r}; remove gp_lambda (or set loss: wgan_gp)")
        return self


class MlpModel(ModelCommon):
    """Fully connected G and D: Linear, act, norm per hidden layer (the order all the sources use). A LeakyReLU
    slope belongs to `lrelu`: it defaults to 0.2 there and is an error with another activation."""

    arch: Literal["mlp"]
    g_hidden: list[PosInt]
    d_hidden: list[PosInt]
    g_act: Act = "lrelu"
    d_act: Act = "lrelu"
    g_slope: Optional[NonNegFloat] = None  # LeakyReLU negative slope (lrelu only; null there means 0.2)
    d_slope: Optional[NonNegFloat] = None
    g_norm: Norm = "none"
    d_norm: Norm = "none"
    g_out: Literal["sigmoid", "tanh", "none"] = "sigmoid"
    n_classes: NonNegInt = 0  # > 0: conditional on a one-hot label (G's seed and D's image both get it)

    @model_validator(mode="before")
    @classmethod
    def _slope_default(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        raw = dict(raw)
        for net in ("g", "d"):
            if raw.get(f"{net}_act", "lrelu") == "lrelu" and raw.get(f"{net}_slope") is None:
                raw[f"{net}_slope"] = 0.2
        return raw

    @model_validator(mode="after")
    def _slope_used(self) -> "MlpModel":
        for net in ("g", "d"):
            act, slope = getattr(self, f"{net}_act"), getattr(self, f"{net}_slope")
            if act != "lrelu" and slope is not None:
                raise ValueError(f"{net}_slope={slope} is the LeakyReLU slope, but {net}_act is {act!r}; remove "
                                 f"{net}_slope (or set {net}_act: lrelu)")
        return self


class ConvModel(ModelCommon):
    """A convolutional family whose layer list is fixed by its source (see ganlab.engine.models). Each family takes only
    the keys its networks use; a key it does not use is an error, so an ablation of it cannot silently do nothing."""

    @property
    def n_classes(self) -> int:
        return 0  # conditioning is implemented for the mlp family only


class Cs231nDcganModel(ConvModel):
    arch: Literal["cs231n_dcgan"]


class Dcgan64Model(ConvModel):
    arch: Literal["dcgan64"]
    ngf: PosInt = 64  # G's and D's base widths
    ndf: PosInt = 64
    d_norm: Literal["batchnorm", "none"] = "batchnorm"  # the critic: `none` for WGAN-GP


class BlogConvModel(ConvModel):
    arch: Literal["blog_conv"]


class BookCnnModel(ConvModel):
    arch: Literal["book_cnn"]
    act: Literal["lrelu", "gelu"] = "lrelu"  # `gelu` replaces every LeakyReLU(0.2) (book notebook 15)


FAMILIES: dict[str, type[ModelCommon]] = {
    "mlp": MlpModel, "cs231n_dcgan": Cs231nDcganModel, "dcgan64": Dcgan64Model, "blog_conv": BlogConvModel,
    "book_cnn": BookCnnModel}


ModelCfg = Annotated[Union[MlpModel, Cs231nDcganModel, Dcgan64Model, BlogConvModel, BookCnnModel],
                     Field(discriminator="arch")]


def _yaml_switch(value: Any) -> Any:
    """`on`/`off` as YAML 1.1 reads them unquoted (PyYAML, and `dvc exp run -S train.joint=on`): true/false."""
    return ("on" if value else "off") if isinstance(value, bool) else value


Switch = Annotated[Literal["auto", "on", "off"], BeforeValidator(_yaml_switch)]


class TrainCfg(Strict):
    epochs: PosInt = 1
    batch_size: PosInt = 1
    max_steps: Optional[PosInt] = None  # cap on steps (real batches consumed); the tests use it
    optimizer: Literal["sgd", "adam"] = "adam"
    lr_g: PosFloat = 1e-4
    lr_d: PosFloat = 1e-4
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    n_critic: PosInt = 1  # D updates (each on a fresh real batch) per G update
    d_update: Literal["joint", "split"] = "joint"  # split: the book's two D steps, real then fake
    g_noise: Literal["fresh", "reuse"] = "fresh"  # reuse: G steps on the D step's fake batch (DCGAN tutorial)
    shuffle: bool = True
    drop_last: bool = True
    seed: NonNegInt = 0
    # Seeds trained by one train@ stage: train.seed ... train.seed + seeds - 1, each a run of its own (1: the usual
    # single run). Default 1: every seed costs one more full training (docs/experiments.md, "Seeds").
    seeds: Annotated[int, Field(ge=1, le=100)] = 1
    # How several seeds train: auto: together (one stacked computation) where the family allows it and it is
    # expected to pay (a GPU: engine.joint.worthwhile), else one after another; on: together wherever the family
    # allows it; off: one after another (each seed then gives bitwise the weights of a single run of that seed, on
    # CPU)
    joint: Switch = "auto"
    device: Device = "auto"
    log_every: PosInt = 10
    checkpoint_every: PosInt = 1000
    grid_size: PosInt = 64  # samples in the fixed-noise grid
    # bf16: autocast of the forward passes (CUDA, or CPU); fp64: the whole run in float64 (weights, data, noise,
    # optimiser), for exactness checks: rounding then sits far below Adam's eps (docs/team.md, data-parallel)
    precision: Literal["fp32", "bf16", "fp64"] = "fp32"
    channels_last: bool = False  # NHWC memory layout for convolutional networks (faster on tensor cores)
    # Speed features (bench/README.md has the measured gains). Off by default: the defaults are the sources' maths
    # in strict fp32, bitwise reproducible on CPU.
    tf32: bool = False  # TF32 tensor cores for fp32 matmuls and convolutions (CUDA); false: strict fp32
    cudnn_benchmark: bool = False  # let cuDNN time its algorithms for each shape (CUDA; not bitwise repeatable)
    fused: bool = False  # the optimisers' fused kernels (torch.optim fused=True): one launch for all parameters
    compile: bool = False  # torch.compile G's and D's forward passes (inductor; the first steps compile)
    cuda_graph: bool = False  # capture the whole iteration in CUDA graphs and replay it: one launch per step
    # How a step is computed. auto: the hand-written step of ganlab.engine.mlp_steps where it applies (fully connected G
    # and D, split D update, fresh G batch, bce or mse; the same weights, bitwise on CPU) and autograd elsewhere.
    engine: Literal["auto", "autograd", "manual"] = "auto"
    threads: Optional[PosInt] = None  # CPU threads while training; null: 1 at batch 1 (faster, bench/README.md)
    # Data-parallel: this many processes under torchrun (ganlab.engine.distributed), each on 1/nproc of every batch; the
    # same weights as one process (batched variants only; gloo on CPU, NCCL with one GPU per process)
    nproc: PosInt = 1

    @property
    def seed_list(self) -> list[int]:
        """The seeds a train@ stage trains: seed, seed + 1, ..., seed + seeds - 1."""
        return list(range(self.seed, self.seed + self.seeds))


class Variant(Strict):
    source: Literal["book", "cs231n", "dcgan", "blog", "d2l", "wgan_gp"]
    data: VariantData
    model: ModelCfg
    train: TrainCfg

    @model_validator(mode="after")
    def _fits(self) -> "Variant":
        if self.model.n_classes and self.data.dataset != "mnist":
            raise ValueError(f"n_classes={self.model.n_classes}: only the mnist dataset has labels")
        if self.data.dataset in ("pattern_1010", "gaussian_2d") and (
                self.data.scale != "unit" or self.data.image_size is not None):
            raise ValueError(f"{self.data.dataset} is a set of vectors: leave data.scale at 'unit' and "
                             f"data.image_size null")
        if self.model.latent == "const" and self.model.nz != 1:
            raise ValueError("latent 'const' feeds the single value 0.5; set nz to 1")
        return self


# Global overrides: the keys that make sense for every variant, all null by default.
class ModelOverrides(Strict):
    loss: Optional[Literal[LOSSES]] = None  # type: ignore[valid-type]
    latent: Optional[Literal["const", "rand", "randn", "uniform"]] = None
    nz: Optional[PosInt] = None
    init: Optional[Literal["default", "xavier", "dcgan", "normal"]] = None
    gp_lambda: Optional[NonNegFloat] = None


# Every train key can be overridden globally: the overrides are TrainCfg with each key optional and null.
TrainOverrides = create_model("TrainOverrides", __base__=Strict, **{
    k: (Optional[Annotated[(f.annotation, *f.metadata)]] if f.metadata else Optional[f.annotation], None)
    for k, f in TrainCfg.model_fields.items()})


TRACKING_URI_FORMS = "sqlite:///path/to/mlflow.db (a local store), http(s)://host[:port][/path] (an MLflow server)"


def _check_tracking_uri(value: Optional[str]) -> Optional[str]:
    if value is None:
        return value
    url = urlparse(value)
    if url.scheme in URL_SCHEMES:
        _no_userinfo(value, TRACKING_SECRETS)
    ok = (url.scheme == "sqlite" and value.startswith("sqlite:///") and len(value) > len("sqlite:///")
          and not value.endswith("/")) or (url.scheme in URL_SCHEMES and bool(url.hostname) and " " not in value)
    if not ok:
        raise ValueError(f"{value!r} is not a tracking URI ganlab can use; write {TRACKING_URI_FORMS}, "
                         f"or null for sqlite:///<repo>/mlruns/mlflow.db")
    return value


class TrackingCfg(Strict):
    # null: sqlite:///<DVC_ROOT or cwd>/mlruns/mlflow.db; MLFLOW_TRACKING_URI wins
    uri: Annotated[Optional[str], AfterValidator(_check_tracking_uri)] = None
    experiment: str = "ganlab"
    telemetry: bool = False  # MLflow's usage reports; MLFLOW_DISABLE_TELEMETRY in the environment wins
    # points per loss metric in MLflow, at most: a longer run sends the mean of each window of rows (losses.csv
    # keeps them all); the store's Python costs ~0.1 ms a point, ~8 % of a batch-1 run logging every 10 steps
    max_points: PosInt = 1000


# --------------------------------------------------------------------------------------------------- evaluation
Fraction = Annotated[float, Field(gt=0, le=1)]


class ClassifierRun(Strict):
    """One MNIST classifier of the book's chapter 1 (variants.md A1) and how it is trained. The network returns
    raw scores; the loss applies its link (mse: MSE on sigmoid, the book's nb 03; bce: BCE on sigmoid, nb 04/13)."""

    net: Literal["mlp_sigmoid", "mlp_lrelu_ln", "cnn"]
    loss: Literal["mse", "bce", "ce"] = "bce"
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: PosFloat = 0.001
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    epochs: PosInt = 3
    batch_size: PosInt = 1


class ClassifierCfg(Strict):
    """Stage train_classifier: the book's three classifiers; `cnn` is also the evaluator of the MNIST GANs."""

    seed: NonNegInt = 0
    device: Device = "cpu"
    limit: Optional[PosInt] = None  # train on the first `limit` training images only (tests)
    mlp: ClassifierRun = ClassifierRun(net="mlp_sigmoid", loss="mse", optimizer="sgd", lr=0.01)
    mlp_refined: ClassifierRun = ClassifierRun(net="mlp_lrelu_ln", loss="bce", optimizer="adam", lr=0.001)
    cnn: ClassifierRun = ClassifierRun(net="cnn", loss="bce", optimizer="adam", lr=0.001, epochs=20, batch_size=64)


class EvalCfg(Strict):
    """Stage evaluate@<variant>: how many samples, which seed, and the metrics' settings."""

    n_samples: PosInt = 10_000
    seed: NonNegInt = 0
    batch_size: PosInt = 500  # generation and feature batches
    chunk: PosInt = 2048  # rows per block of a distance matrix
    coverage_min_share: Fraction = 0.02  # a digit is covered when it gets at least this share of the samples
    real_keep: Fraction = 0.99  # unrecognisable: a sample the evaluator is less sure of than of this share of reals
    knn_k: PosInt = 3  # precision/recall neighbourhoods (Kynkaanniemi et al. 2019 use k = 3)
    kid_subsets: PosInt = 100
    kid_subset_size: PosInt = 1000
    final_fraction: Fraction = 0.1  # "final" losses: the mean over this last share of the logged rows
    device: Device = "auto"
    inception: bool = True  # CelebA: Inception FID/KID when torch-fidelity and its weights are present locally
    inception_weights: Optional[str] = None  # null: <torch hub dir>/checkpoints/<torch-fidelity's file name>


class SampleCfg(Strict):
    """Stage sample@<variant>: the pictures of a trained generator."""

    seed: NonNegInt = 0
    grid_size: PosInt = 64  # samples in the fixed-noise grid
    per_digit: PosInt = 8  # conditional variants: samples per digit row


# --------------------------------------------------------------------------------------------------- limits
class LimitsCfg(Strict):
    """The largest sizes params.yaml may ask for: each one allocates memory or starts processes, so a typo (or a
    teammate's experiment) asking for 1e12 is refused with the key, its value and the limit before anything
    allocates. Each limit is generous for this curriculum and below what one machine holds; raise it here when
    yours holds more."""

    batch_size: PosInt = 65_536  # rows of a batch (train, eval, classifier): 65,536 64x64x3 images are 3 GB fp32
    width: PosInt = 16_384  # nz, each hidden layer, ngf/ndf, n_classes, eval.chunk: a 16,384² layer is 1 GiB fp32
    layers: PosInt = 64  # entries of g_hidden and d_hidden
    image_size: PosInt = 1024  # data.image_size: one 1024x1024x3 image is 12 MB fp32, 64 of them 0.8 GB
    samples: PosInt = 1_000_000  # eval.n_samples, grids, data set sizes and limits: 1e6 MNIST images are 3 GB fp32
    processes: PosInt = 256  # train.nproc (torchrun starts that many), threads, JPEG workers
    parameters: PosInt = 500_000_000  # a generator's parameters, checked before it is built (2 GB in fp32)
    file_bytes: PosInt = 4 << 30  # a downloaded model's files (load_generator); download.chunk_bytes


# Which key is bounded by which limit, as paths into a variant and into params.yaml. A list is bounded entry by
# entry, and its length by `layers`.
VARIANT_LIMITS = {("data", "image_size"): "image_size", ("data", "limit"): "samples", ("model", "nz"): "width",
                  ("model", "g_hidden"): "width", ("model", "d_hidden"): "width", ("model", "ngf"): "width",
                  ("model", "ndf"): "width", ("model", "n_classes"): "width", ("train", "batch_size"): "batch_size",
                  ("train", "grid_size"): "samples", ("train", "nproc"): "processes",
                  ("train", "threads"): "processes"}
PARAMS_LIMITS = {("eval", "n_samples"): "samples", ("eval", "batch_size"): "batch_size", ("eval", "chunk"): "width",
                 ("eval", "kid_subset_size"): "samples", ("sample", "grid_size"): "samples",
                 ("sample", "per_digit"): "samples", ("classifier", "limit"): "samples",
                 ("classifier", "mlp", "batch_size"): "batch_size",
                 ("classifier", "mlp_refined", "batch_size"): "batch_size",
                 ("classifier", "cnn", "batch_size"): "batch_size", ("data", "mnist", "train_rows"): "samples",
                 ("data", "mnist", "test_rows"): "samples", ("data", "celeba", "n_images"): "samples",
                 ("data", "celeba", "workers"): "processes", ("data", "toy", "pattern_1010_size"): "samples",
                 ("data", "toy", "gaussian_2d_size"): "samples", ("data", "download", "chunk_bytes"): "file_bytes"}


def limit_errors(cfg: BaseModel, table: dict[tuple[str, ...], str], limits: LimitsCfg, prefix: str) -> list[str]:
    """One line per value of `cfg` above its limit: the key, the value, the limit and how to change it."""
    lines = []
    for path, limit in table.items():
        node: Any = cfg
        for part in path:
            node = getattr(node, part, None)
        key, cap = ".".join(p for p in (prefix, *path) if p), getattr(limits, limit)
        if isinstance(node, list) and len(node) > limits.layers:
            lines.append(_over(key, f"{len(node)} entries", limits.layers, "layers"))
        values = node if isinstance(node, list) else [node]
        big = [(i, v) for i, v in enumerate(values) if isinstance(v, int) and v > cap]
        if big:  # a list names its first entry over the limit (and how many are)
            i, v = big[0]
            shown = f"{v:_}" + (f" ({len(big)} entries over the limit)" if len(big) > 1 else "")
            lines.append(_over(f"{key}[{i}]" if isinstance(node, list) else key, shown, cap, limit))
    return lines


def _over(key: str, value: str, cap: int, limit: str) -> str:
    return (f"params.yaml: {key} = {value}: above the limit {cap:_} (limits.{limit}), more than one machine "
            f"holds; lower it, or raise limits.{limit} in params.yaml if yours holds more")


# Variant names go into shell commands (dvc.yaml's `cmd: ... ${key}`), paths (models/<name>/) and MLflow filter
# strings (tags.variant = '<name>'): only what is inert in all three.
VARIANT_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


def _check_name(name: str) -> None:
    if not VARIANT_NAME.fullmatch(name):
        hint = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or "my_variant"
        raise ConfigError(f"params.yaml: variants.{name!r}: the name is refused: variant names go into shell "
                          f"commands (dvc.yaml), file paths and MLflow filters, so a name is a lower-case letter "
                          f"and then up to 63 lower-case letters, digits or underscores ({VARIANT_NAME.pattern}); "
                          f"rename it, e.g. to {hint[:64] if hint[0].isalpha() else 'v_' + hint[:62]!r}")


class Params(Strict):
    data: DataCfg
    tracking: TrackingCfg = TrackingCfg()
    model: ModelOverrides = ModelOverrides()
    train: TrainOverrides = TrainOverrides()
    classifier: ClassifierCfg = ClassifierCfg()
    eval: EvalCfg = EvalCfg()
    sample: SampleCfg = SampleCfg()
    limits: LimitsCfg = LimitsCfg()
    variants: dict[str, dict[str, Any]]  # validated one by one, after the overrides, by `variant()`

    def variant(self, name: str) -> Variant:
        """The resolved configuration of one variant: its own section with the global overrides laid over it."""
        if name not in self.variants:
            raise ConfigError(f"params.yaml: variants.{name}: no such variant; "
                              f"defined are {', '.join(sorted(self.variants))}")
        raw = {k: dict(v) if isinstance(v, dict) else v for k, v in self.variants[name].items()}
        for o in self.overrides(name):
            section, key = o.key.split(".", 1)
            raw[section] = {**(raw.get(section) or {}), key: o.value}
        if self._gp_unused(name):  # a global loss override leaves the variant's own gp_lambda without a use
            raw["model"] = {k: v for k, v in raw["model"].items() if k != "gp_lambda"}
        variant = _validate(Variant, raw, prefix=f"variants.{name}")
        over = limit_errors(variant, VARIANT_LIMITS, self.limits, f"variants.{name}")
        if over:
            raise ConfigError("\n".join(over))
        return variant

    def _gp_unused(self, name: str) -> bool:
        own = (self.variants.get(name) or {}).get("model") or {}
        return own.get("gp_lambda") is not None and self.model.loss not in (None, "wgan_gp")

    def overrides(self, name: str) -> list["Override"]:
        """The global keys that apply to variant `name`, with the variant's own value each one replaces.

        The rule: a non-null key of the global `model:` or `train:` block wins over the same key in every variant
        it applies to. `model.gp_lambda` applies only to variants whose loss is wgan_gp (the others do not use it).
        """
        own_sections = self.variants.get(name) or {}
        found = []
        for section, block in (("model", self.model), ("train", self.train)):
            own = own_sections.get(section) or {}
            for key, value in block.model_dump(exclude_none=True).items():
                if (section, key) == ("model", "gp_lambda") and (self.model.loss or own.get("loss")) != "wgan_gp":
                    continue
                found.append(Override(f"{section}.{key}", _plain(value), _plain(own.get(key))))
        return found

    def masking(self, name: str) -> list[str]:
        """One warning per global override that replaces a different value set in the variant itself."""
        return [f"params.yaml: global {o.key} = {o.value!r} masks variants.{name}.{o.key} = {o.masked!r} "
                f"(global overrides win); to train {name} with its own value, set {o.key}: null"
                for o in self.overrides(name) if o.masks] + (
            [f"params.yaml: global model.loss = {self.model.loss!r} leaves variants.{name}.model.gp_lambda unused "
             f"(it belongs to wgan_gp); {name} trains without a gradient penalty"] if self._gp_unused(name) else [])

    def masking_line(self, names: list[str]) -> Optional[str]:
        """`masking` of these variants as one warning (one per run, not one per key and variant): per global key,
        the variants' own values it masks; None when it masks nothing."""
        masked: dict[str, list[str]] = {}
        for name in names:
            for o in self.overrides(name):
                if o.masks:
                    masked.setdefault(f"global {o.key} = {o.value!r}", []).append(
                        f"variants.{name}.{o.key} = {o.masked!r}")
        parts = [f"{key} masks {', '.join(own)}" for key, own in masked.items()]
        if gp := [n for n in names if self._gp_unused(n)]:
            parts.append(f"global model.loss = {self.model.loss!r} leaves model.gp_lambda of {', '.join(gp)} unused "
                         f"(it belongs to wgan_gp; they train without a gradient penalty)")
        return (f"params.yaml: {'; '.join(parts)} (global overrides win; set a global key to null to train each "
                f"variant with its own value)") if parts else None


@dataclass(frozen=True)
class Override:
    key: str  # "model.loss"
    value: Any  # the global value that is used
    masked: Any  # the variant's own value it replaces; None when the variant does not set the key

    @property
    def masks(self) -> bool:
        return self.masked is not None and self.masked != self.value


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _redact(value: Any) -> Any:
    """A URL's password is not repeated into terminals and CI logs by the error that refuses it."""
    if isinstance(value, str) and "@" in urlparse(value).netloc:
        url = urlparse(value)
        return url._replace(netloc="***@" + url.netloc.rsplit("@", 1)[1]).geturl()
    return value


def _fmt_errors(err: ValidationError, prefix: str) -> str:
    lines = []
    for e in err.errors():
        # Drop pydantic's union-tag entries (the family name, "function-after[...]") from the location.
        family = next((p for p in e["loc"] if isinstance(p, str) and p in FAMILIES), None)
        loc = [str(p) for p in e["loc"] if not (isinstance(p, str) and (p in FAMILIES or "[" in p))]
        key = ".".join(([prefix] if prefix else []) + loc)
        value = e.get("input")
        shown = "(missing)" if e["type"] == "missing" else repr(_redact(value))
        if isinstance(value, dict):
            shown = "{...}"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden" and family:
            takes = ", ".join(k for k in FAMILIES[family].model_fields if k != "arch")
            msg = (f"the {family} network family does not use this key (it takes: {takes}); remove it, or pick an "
                   f"arch that uses it")
        elif e["type"] == "extra_forbidden":
            msg = "unknown key; remove it or check its spelling"
        lines.append(f"params.yaml: {key} = {shown}: {msg}")
    return "\n".join(lines)


def _validate(cls: type[BaseModel], raw: Any, prefix: str = "") -> Any:
    try:
        return cls.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_fmt_errors(err, prefix)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Parse and check params.yaml, and every variant in it, so any mistake shows before work starts."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; run from the repository root or pass --params") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    if isinstance(raw.get("variants"), dict):  # before anything reads a name (it becomes commands and paths)
        for name in raw["variants"]:
            _check_name(str(name))
    params = _validate(Params, raw)
    over = limit_errors(params, PARAMS_LIMITS, params.limits, "")
    if over:
        raise ConfigError("\n".join(over))
    for name in params.variants:
        params.variant(name)  # fail on any variant's mistake, not only the one being run
    return params


def flatten(cfg: BaseModel | dict, prefix: str = "") -> dict[str, Any]:
    """{'model': {'loss': 'bce'}} -> {'model.loss': 'bce'}: for logging resolved params. Null keys (a setting the
    variant does not use, or "no cap") are left out, so a run lists only what shaped it."""
    d = cfg.model_dump(exclude_none=True) if isinstance(cfg, BaseModel) else cfg
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
