"""``cnnpipe predict`` never loses a user's file (issue 15): a U-Net's masks are named after the
whole input name, written atomically, and an existing file is overwritten only with ``--force``.

Through the real command against a real MLflow server, with a tiny U-Net registered by the real
register stage (the set-up of ``test_cli.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow_server import mlflow_server  # noqa: F401  (fixture)
from PIL import Image
from serving.test_cli import SCENE, git, registry_project, run_cli

from cnnpipe.config import load_params

UNET = "predict-outputs-unet"  # its own name: the server is shared with test_cli.py's registry


@pytest.fixture(scope="module")
def registered(tmp_path_factory, mlflow_server) -> Path:  # noqa: F811
    """A project whose tiny U-Net is registered (and @champion); returns its root."""
    from stages.register import main

    with registry_project(tmp_path_factory, "predict-out", mlflow_server.url) as root:
        params = yaml.safe_load((root / "params.yaml").read_text())
        params["register"]["unet_name"] = UNET
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        git(root, "add", "-A")
        git(root, "commit", "-qm", "tiny models")
        main(load_params(root / "params.yaml"), "unet")
        yield root


@pytest.fixture
def photos(tmp_path) -> dict[str, Path]:
    """``photo.png`` and ``photo.jpg``: one stem, two files."""
    rng = np.random.default_rng(0)
    out = {}
    for suffix, size in (("png", (48, 40)), ("jpg", (SCENE, SCENE))):
        path = tmp_path / f"photo.{suffix}"
        Image.fromarray(rng.integers(0, 256, size[::-1]).astype(np.uint8)).save(path)
        out[suffix] = path
    return out


def _predict(registered: Path, capsys, *argv: str) -> tuple[int, str, str]:
    """``cnnpipe predict`` in the registered project (the fixture's working directory)."""
    assert Path.cwd() == registered
    return run_cli(capsys, "predict", "--backend", "keras", *argv)


def test_two_inputs_of_one_stem_write_two_masks(registered, photos, capsys):
    rc, out, err = _predict(registered, capsys, UNET, str(photos["png"]), str(photos["jpg"]))
    assert rc == 0, err
    png_mask, jpg_mask = (p.with_name(p.name + ".mask.png") for p in (photos["png"], photos["jpg"]))
    assert f"{photos['png']}: mask -> {png_mask}" in out and f"{photos['jpg']}: mask -> {jpg_mask}" in out
    assert Image.open(png_mask).size == (48, 40) and Image.open(jpg_mask).size == (SCENE, SCENE)
    assert sorted(p.name for p in photos["png"].parent.iterdir()) == [
        "photo.jpg", "photo.jpg.mask.png", "photo.png", "photo.png.mask.png"]  # no temp files


def test_an_existing_mask_is_refused_in_one_line_and_nothing_is_written(registered, photos, capsys):
    mine = photos["png"].with_name("photo.png.mask.png")
    mine.write_bytes(b"the user's own file")
    rc, out, err = _predict(registered, capsys, UNET, str(photos["jpg"]), str(photos["png"]))
    assert rc == 1 and out == ""
    line = f"cnnpipe predict: {mine}: already exists (the mask of {photos['png']}); nothing written; "
    assert err.strip().splitlines() == [line + "pass --force to overwrite it"]
    assert mine.read_bytes() == b"the user's own file"
    assert not photos["jpg"].with_name("photo.jpg.mask.png").exists()  # the other input's neither

    rc, out, err = _predict(registered, capsys, UNET, "--force", str(photos["png"]))
    assert rc == 0, err
    assert Image.open(mine).size == (48, 40)  # replaced whole, by a mask
    assert not [p for p in mine.parent.iterdir() if p.name.startswith(".")]  # no temp file left


def test_two_inputs_that_would_write_one_mask_are_refused_before_writing(registered, photos, capsys):
    (photos["png"].parent / "sub").mkdir()
    same = photos["png"].parent / "sub" / ".." / "photo.png"
    rc, _, err = _predict(registered, capsys, UNET, str(photos["png"]), str(same))
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert f"{same} and {photos['png']} would both write the mask" in err
    assert not photos["png"].with_name("photo.png.mask.png").exists()


def test_a_failed_predict_leaves_an_existing_mask_alone_with_force(registered, photos, capsys, tmp_path):
    """``--force`` with an unreadable second input: the bad file is refused before any mask."""
    mask = photos["png"].with_name("photo.png.mask.png")
    mask.write_bytes(b"kept")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    rc, _, err = _predict(registered, capsys, UNET, "--force", str(photos["png"]), str(broken))
    assert rc == 1 and f"{broken}: not a readable image" in err
    assert mask.read_bytes() == b"kept"
