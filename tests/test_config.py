import math
import typing

import pytest
import yaml
from helpers import REPO_PARAMS, params_with
from pydantic import BaseModel, ValidationError

from cnnpipe.config import (
    Params,
    ParamsError,
    load_params,
    merge,
    params_from_dict,
    read_params,
    to_dict,
)


def test_repo_params_load_and_round_trip():
    params = load_params(REPO_PARAMS)
    assert isinstance(params, Params)
    assert params_from_dict(to_dict(params)) == params


def _sections(model: type[BaseModel]) -> typing.Iterator[type[BaseModel]]:
    yield model
    for info in model.model_fields.values():
        for tp in (info.annotation, *typing.get_args(info.annotation)):
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                yield from _sections(tp)


def test_the_schema_has_no_defaults_so_params_yaml_is_the_one_source():
    # The rule holds for every field, recipe or not: a default in code could differ from
    # params.yaml unseen, and an overlay would silently inherit it instead of the base's value.
    with_default = [f"{section.__name__}.{name}" for section in _sections(Params)
                    for name, info in section.model_fields.items() if not info.is_required()]
    assert with_default == []
    # ... so params.yaml names every key: nothing is left for the code to fill in.
    def keys(data, prefix=""):
        return {k for key, value in data.items()
                for k in ({f"{prefix}{key}"} | (keys(value, f"{prefix}{key}.") if isinstance(value, dict) else set()))}
    assert keys(yaml.safe_load(REPO_PARAMS.read_text())) == keys(to_dict(load_params(REPO_PARAMS)))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"bogus": 1}, "unknown key(s) bogus; valid keys: seed"),
        ({"fetch": {"timeout": 3}}, "unknown key(s) fetch.timeout"),
        ({"seed": "x"}, "seed: expected an integer"),
        ({"seed": True}, "seed: expected an integer"),
        ({"fetch": {"dataset": "cifar"}}, "unsupported value 'cifar'; choose one of: fashion-mnist"),
        ({"prepare": {"scenes": {"max_side": 80}}}, "does not fit the 64 px canvas"),
        ({"prepare": {"val_fraction": 1.5}}, "prepare.val_fraction: must be in (0, 1)"),
        ({"augment": {"shift": -0.1}}, "augment.shift: must be in [0, 1]"),
        ({"fetch": {"timeout_s": 0}}, "fetch.timeout_s: must be > 0"),
        ({"fetch": {"timeout_s": "3"}}, "fetch.timeout_s: expected a number, got str '3'"),
        ({"transfer": {"fit": {"learning_rate": math.nan}}},
         "transfer.fit.learning_rate: must be a finite number, got nan"),
        ({"register": {"min_dice": math.inf}}, "register.min_dice: must be a finite number, got inf"),
        ({"transfer": {"scales": [1.0, 5]}}, "transfer.scales[1]: must be in (0, 4], got 5"),
        ({"train_unet": {"filters": []}}, "train_unet.filters: must not be empty"),
        ({"paths": {"raw": None}}, "paths.raw: must not be null"),
    ],
)
def test_bad_params_name_the_key(data, message):
    with pytest.raises(ParamsError) as err:
        params_with(data)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_missing_key_is_named_and_a_typo_reads_as_unknown_first():
    data = read_params(REPO_PARAMS)  # a fresh mapping
    fit = data["train_unet"]["fit"]
    del fit["precision"]
    with pytest.raises(ParamsError, match=r"^train_unet\.fit\.precision: missing; params\.yaml sets every key"):
        params_from_dict(data)
    fit["precison"] = "auto"  # unknown + missing: the unknown key is the useful hint
    with pytest.raises(ParamsError, match=r"^unknown key\(s\) train_unet\.fit\.precison; valid keys of "):
        params_from_dict(data)


def test_lists_become_tuples_and_params_are_frozen():
    params = params_with({"prepare": {"scenes": {"n_train": 10}}})
    assert params.prepare.scenes.n_train == 10
    assert params.train_classifier.filters == (32, 64, 128)
    with pytest.raises(ValidationError, match="frozen"):
        params.seed = 1  # type: ignore[misc]


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ParamsError, match="not valid YAML") as err:
        load_params(bad)
    assert "\n" not in str(err.value)  # PyYAML's several-line report, told in one line
    assert str(err.value).startswith(f"{bad}: not valid YAML: line 2, column 1: ")


@pytest.mark.parametrize(("text", "message"), [
    ("seed: 1\nfetch: {}\nseed: 2\n", "line 3: duplicate key 'seed' (first set on line 1)"),
    ("train_unet:\n  fit: {epochs: 2, epochs: 3}\n", "line 2: duplicate key 'epochs' (first set on line 2)"),
    ("a:\n  x: 1\n  y: 2\n  x: 3\n", "line 4: duplicate key 'x' (first set on line 2)"),
])
def test_a_key_given_twice_is_refused_naming_key_and_line(tmp_path, text, message):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError) as err:
        read_params(path)
    assert str(err.value) == f"{path}: {message}; give each key once"


def test_a_yaml_merge_key_may_be_overridden(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 3\n")
    assert read_params(path) == {"base": {"x": 1, "y": 2}, "other": {"x": 3, "y": 2}}


def test_seed_takes_what_numpy_and_tensorflow_take():
    assert params_with({"seed": 0}).seed == 0 and params_with({"seed": 2**32 - 1}).seed == 2**32 - 1
    for bad in (-1, 2**32):
        with pytest.raises(ParamsError, match=rf"^seed: must be in \[0, 4294967295\], got {bad}$"):
            params_with({"seed": bad})


@pytest.mark.parametrize(("filters", "dense", "side", "fits"), [
    ([32, 64, 128], 256, 28, True),
    ([8, 16, 32, 64], 256, 28, True),  # 28 -> 14 -> 7 -> 3 -> 1 (the dense head's pool)
    ([8, 16, 32, 64, 128], 256, 28, False),
    ([8, 16, 32, 64, 128], 0, 28, True),  # global pooling: one pool fewer
    ([8, 16, 32, 64, 128, 256], 0, 28, False),
    ([8, 16, 32, 64, 128, 256], 256, 64, True),
])
def test_classifier_depth_against_the_image_side(filters, dense, side, fits):
    from cnnpipe.config.depth import check_backbone_depth

    if fits:
        check_backbone_depth(filters, side, "classification", extra_pool=dense > 0)
        return
    with pytest.raises(ParamsError, match=rf"^train_classifier\.filters: {len(filters)} blocks .* the "
                                          rf"classification images are {side} px, where at most [0-9] blocks fit; "
                                          r"use fewer filters or larger images \(datasets\.classification\.image_size\)$"):
        check_backbone_depth(filters, side, "classification", extra_pool=dense > 0)


@pytest.mark.parametrize(("filters", "side", "deepest"), [
    ([16, 32, 64, 128], 64, None), ([4, 8, 16], 30, 2), ([4, 8, 16, 32], 36, 3), ([4] * 8, 64, 7), ([4, 8], 33, 1),
])
def test_unet_depth_against_the_image_side(filters, side, deepest):
    from cnnpipe.config.depth import check_unet_depth

    if deepest is None:
        check_unet_depth(filters, side)
        return
    with pytest.raises(ParamsError) as err:
        check_unet_depth(filters, side)
    assert f"the segmentation images are {side} px, where at most {deepest} level" in str(err.value)
    assert "datasets.segmentation.image_size, or prepare.scenes.canvas" in str(err.value)


def test_the_unet_depth_check_agrees_with_keras():
    import keras

    from cnnpipe.config.depth import check_unet_depth
    from cnnpipe.models.unet import build_unet

    for side in (30, 32):
        try:
            check_unet_depth([4, 8, 16], side)
        except ParamsError:
            with pytest.raises(ValueError, match="Concatenate"):
                build_unet((side, side, 1), [4, 8, 16], 1)
        else:
            assert build_unet((side, side, 1), [4, 8, 16], 1).output_shape == (None, side, side, 1)
        keras.backend.clear_session()


# --------------------------------------------------------------------------------------
# Overlays (params.quick.yaml)
# --------------------------------------------------------------------------------------


def test_an_overlay_deep_merges_onto_its_base_and_replaces_lists(tmp_path):
    (tmp_path / "base.yaml").write_text(REPO_PARAMS.read_text())
    (tmp_path / "sub").mkdir()
    overlay = tmp_path / "sub" / "quick.yaml"
    overlay.write_text("extends: ../base.yaml\n"  # relative to the overlay's own folder
                       "transfer: {scales: [0.5], fit: {epochs: 1}}\ntrain_unet: {filters: [8]}\n")
    base, params = load_params(REPO_PARAMS), load_params(overlay)
    assert params.transfer.scales == (0.5,) and params.train_unet.filters == (8,)  # replaced, not merged
    assert params.transfer.fit.epochs == 1
    assert params.transfer.fit.model_copy(update={"epochs": base.transfer.fit.epochs}) == base.transfer.fit
    assert params.model_copy(update={"transfer": base.transfer, "train_unet": base.train_unet}) == base


def test_an_unknown_key_in_an_overlay_is_named(tmp_path):
    overlay = tmp_path / "o.yaml"
    overlay.write_text(f"extends: {REPO_PARAMS}\ntrain_localizer: {{fit: {{epoch: 2}}}}\n")
    with pytest.raises(ParamsError, match=r"unknown key\(s\) train_localizer\.fit\.epoch; valid keys of "
                                          r"train_localizer\.fit: epochs, "):
        load_params(overlay)
    overlay.write_text("extends: o.yaml\nseed: 1\n")
    with pytest.raises(ParamsError, match="extends loops back"):
        load_params(overlay)
    overlay.write_text("extends: missing.yaml\n")
    with pytest.raises(ParamsError, match="missing.yaml: params file not found"):
        load_params(overlay)


def test_the_quick_profile_is_the_real_recipe_on_less_data():
    base, quick = load_params(REPO_PARAMS), load_params(REPO_PARAMS.with_name("params.quick.yaml"))
    overlay = yaml.safe_load(REPO_PARAMS.with_name("params.quick.yaml").read_text())
    assert overlay.pop("extends") == "params.yaml"
    assert to_dict(quick) == merge(to_dict(base), overlay)
    # what the overlay does not name is params.yaml's: e.g. the recipe beyond sizes and epochs
    assert quick.train_localizer.box_loss_weight == base.train_localizer.box_loss_weight
    assert quick.train_classifier.fit.weight_decay == base.train_classifier.fit.weight_decay
    assert quick.datasets == base.datasets and quick.register == base.register
