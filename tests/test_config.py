import pytest

from cnnpipe.config import Params, ParamsError, load_params, params_from_dict, to_dict


def test_repo_params_load_and_round_trip():
    params = load_params("params.yaml")
    assert isinstance(params, Params)
    assert params_from_dict(to_dict(params)) == params


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
    ],
)
def test_bad_params_name_the_key(data, message):
    with pytest.raises(ParamsError) as err:
        params_from_dict(data)
    assert message in str(err.value)


def test_lists_become_tuples_and_params_are_frozen():
    params = params_from_dict({"prepare": {"scenes": {"n_train": 10}}})
    assert params.prepare.scenes.n_train == 10
    with pytest.raises(AttributeError):
        params.seed = 1  # type: ignore[misc]


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
