"""params.yaml is checked once, at the edge: every mistake names the key, the value and what is allowed."""

import pytest
import yaml

from ganlab.config import ConfigError, ModelOverrides, TrainCfg, flatten, load_params
from helpers import REPO, write_params


def load_edited(tmp_path, edit):
    return load_params(write_params(tmp_path / "params.yaml", edit))


def test_repo_params_load_and_every_variant_resolves():
    params = load_params(REPO / "params.yaml")
    assert {"pattern_1010", "gaussian_2d", "mnist_mlp_first", "mnist_mlp", "mnist_cgan", "mnist_vanilla",
            "mnist_lsgan", "mnist_dcgan", "mnist_dcgan64", "mnist_linear", "mnist_conv",
            "mnist_wgan_gp"} <= set(params.variants)
    assert params.variant("mnist_vanilla").train.betas == (0.5, 0.999)
    # every global override key is listed with its null, so `dvc exp run -S` can set it without `+`
    assert all(v is None for v in params.model.model_dump().values())
    assert all(v is None for v in params.train.model_dump().values())
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert set(raw["train"]) == set(TrainCfg.model_fields) and set(raw["model"]) == set(ModelOverrides.model_fields)


def test_a_global_override_is_checked_as_the_variant_key_is(tmp_path):
    def edit(p):
        p["train"].update(epochs=0)
    with pytest.raises(ConfigError, match=r"params.yaml: train\.epochs = 0: .*greater than or equal to 1"):
        load_edited(tmp_path, edit)


def test_unknown_key_is_named(tmp_path):
    def edit(p):
        p["variants"]["mnist_mlp"]["train"]["epoch"] = 3
    with pytest.raises(ConfigError, match=r"variants\.mnist_mlp\.train\.epoch = 3: unknown key"):
        load_edited(tmp_path, edit)


def test_negative_count_names_key_value_and_bound(tmp_path):
    def edit(p):
        p["data"]["mnist"]["train_rows"] = -5
    with pytest.raises(ConfigError, match=r"data\.mnist\.train_rows = -5: .*greater than or equal to 1"):
        load_edited(tmp_path, edit)


def test_unknown_url_scheme(tmp_path):
    def edit(p):
        p["data"]["mnist"]["train_url"] = "ftp://example.org/mnist_train.csv"
    with pytest.raises(ConfigError, match=r"data\.mnist\.train_url = 'ftp://.*'ftp' is not supported; use one of "
                                          r"http, https"):
        load_edited(tmp_path, edit)


def test_crop_larger_than_image(tmp_path):
    def edit(p):
        p["data"]["celeba"]["crop"] = 200
    with pytest.raises(ConfigError, match=r"data\.celeba\.crop = 200: a 200x200 crop is larger than the 178x218"):
        load_edited(tmp_path, edit)


def test_bad_loss_override_names_allowed_losses(tmp_path):
    def edit(p):
        p["model"]["loss"] = "foo"
    with pytest.raises(ConfigError, match=r"model\.loss = 'foo'.*'bce', 'mse', 'lsgan', 'wgan_gp' or 'hinge'"):
        load_edited(tmp_path, edit)


def test_global_overrides_reach_every_variant_and_a_variant_key_one(tmp_path):
    def edit(p):
        p["model"]["loss"] = "hinge"
        p["train"]["epochs"] = 2
        p["variants"]["mnist_mlp"]["train"]["lr_g"] = 0.5
    params = load_edited(tmp_path, edit)
    for name in params.variants:
        v = params.variant(name)
        assert (v.model.loss, v.train.epochs) == ("hinge", 2)
    assert params.variant("mnist_mlp").train.lr_g == 0.5
    assert params.variant("mnist_cgan").train.lr_g == 0.0001


def test_override_that_breaks_one_variant_fails_at_load(tmp_path):
    def edit(p):
        p["train"]["device"] = "gpu"
    with pytest.raises(ConfigError, match=r"train\.device = 'gpu': device 'gpu' is not one of auto, cpu, cuda"):
        load_edited(tmp_path, edit)


@pytest.mark.parametrize("variant, key, value, family", [
    ("mnist_dcgan", "n_classes", 10, "cs231n_dcgan"),  # conditioning: mlp only
    ("mnist_dcgan", "ngf", 32, "cs231n_dcgan"),  # widths: dcgan64 only
    ("mnist_conv", "d_norm", "none", "blog_conv"),
    ("celeba_cnn", "ngf", 32, "book_cnn"),
    ("mnist_dcgan64", "act", "gelu", "dcgan64"),  # GELU: book_cnn only
])
def test_a_key_the_family_does_not_use_is_an_error(tmp_path, variant, key, value, family):
    def edit(p):
        p["variants"][variant]["model"][key] = value
    with pytest.raises(ConfigError, match=rf"variants\.{variant}\.model\.{key} = {value!r}: the {family} network "
                                          rf"family does not use this key \(it takes: loss, latent, nz, init"):
        load_edited(tmp_path, edit)


def test_keys_of_an_unused_activation_or_loss_are_errors(tmp_path):
    def slope(p):
        p["variants"]["mnist_vanilla"]["model"]["g_slope"] = 0.1  # its G uses ReLU
    with pytest.raises(ConfigError, match=r"g_slope=0.1 is the LeakyReLU slope, but g_act is 'relu'"):
        load_edited(tmp_path, slope)

    def gp(p):
        p["variants"]["mnist_vanilla"]["model"]["gp_lambda"] = 5
    with pytest.raises(ConfigError, match=r"gp_lambda=5.0 is used by the wgan_gp loss only"):
        load_edited(tmp_path, gp)


def test_logged_params_are_the_ones_the_variant_uses():
    params = load_params(REPO / "params.yaml")
    assert "model.gp_lambda" not in flatten(params.variant("mnist_vanilla"))
    assert "model.g_slope" not in flatten(params.variant("mnist_vanilla"))  # ReLU G
    assert flatten(params.variant("mnist_vanilla"))["model.d_slope"] == 0.01
    assert flatten(params.variant("mnist_wgan_gp"))["model.gp_lambda"] == 10
    assert "model.ngf" not in flatten(params.variant("mnist_dcgan"))
    assert flatten(params.variant("mnist_dcgan64"))["model.ngf"] == 64


def test_a_global_override_masking_a_variant_setting_is_named(tmp_path):
    """The rule: a non-null global key wins. Where it replaces a different value the variant sets itself, the
    warning names both keys; the same value, or a key the variant leaves unset, is no collision."""
    def edit(p):
        p["model"]["loss"] = "lsgan"
        p["variants"]["mnist_vanilla"]["model"]["loss"] = "hinge"
        p["train"]["max_steps"] = 10
    params = load_edited(tmp_path, edit)
    assert params.variant("mnist_vanilla").model.loss == "lsgan"
    (warning,) = params.masking("mnist_vanilla")
    assert "global model.loss = 'lsgan' masks variants.mnist_vanilla.model.loss = 'hinge'" in warning
    assert params.masking("mnist_lsgan") == []  # lsgan already: nothing masked
    assert {o.key: o.value for o in params.overrides("mnist_lsgan")} == {"model.loss": "lsgan", "train.max_steps": 10}


def test_a_global_loss_override_leaves_gp_lambda_aside(tmp_path):
    def edit(p):
        p["model"]["loss"] = "bce"
        p["model"]["gp_lambda"] = 5
    params = load_edited(tmp_path, edit)
    assert params.variant("mnist_wgan_gp").model.gp_lambda is None  # bce: no penalty, and said so
    assert any("gp_lambda unused" in w for w in params.masking("mnist_wgan_gp"))
    assert "model.gp_lambda" not in {o.key for o in params.overrides("mnist_vanilla")}


def test_one_override_warning_per_run_lists_every_variant_it_masks(tmp_path):
    """`-S train.epochs=1` masks the epochs of every variant: one line per run, not one per variant and key."""
    def edit(p):
        p["train"].update(epochs=1, log_every=10)
        p["model"]["loss"] = "bce"
    params = load_edited(tmp_path, edit)
    line = params.masking_line(list(params.variants))
    assert "\n" not in line and line.count("global train.epochs = 1 masks ") == 1
    for name, own in params.variants.items():  # every variant sets its own epochs; 1 already is no collision
        assert (f"variants.{name}.train.epochs = " in line) == (own["train"]["epochs"] != 1), name
    assert line.count("global model.loss = 'bce' masks ") == 1 and "variants.mnist_lsgan.model.loss = 'lsgan'" in line
    assert "variants.mnist_vanilla.model.loss" not in line  # bce already: nothing masked
    assert "model.gp_lambda of mnist_wgan_gp" in line
    assert params.masking_line(["mnist_vanilla"]).count("masks") == 1  # epochs only; log_every 10 is its own


def test_train_joint_on_and_off_as_yaml_reads_them():
    """`dvc exp run -S train.joint=on` writes `joint: on` unquoted, which YAML 1.1 reads as true: it means "on"."""
    import yaml

    from ganlab.config import TrainCfg, TrainOverrides

    for text, want in (("joint: on", "on"), ("joint: off", "off"), ("joint: auto", "auto")):
        doc = yaml.safe_load(text)
        assert TrainCfg(**doc).joint == want and TrainOverrides(**doc).joint == want
    with pytest.raises(ValueError, match="'auto', 'on' or 'off'"):
        TrainCfg(joint="maybe")
