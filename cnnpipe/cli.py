"""``cnnpipe``: the command line for people. Registry (promote, rollback, lineage, predict),
pipeline runs (run, schedule) and the MLflow UI.

Heavy imports (Keras, Prefect) happen inside the commands that need them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnpipe.config import Params, load_params
from cnnpipe.errors import CnnpipeError

DEFAULT_PARAMS = "params.yaml"
log = logging.getLogger("cnnpipe")


# --------------------------------------------------------------------------------------
# Shared set-up
# --------------------------------------------------------------------------------------


def _params(args: argparse.Namespace) -> Params:
    # Outside a project (no params.yaml), the defaults still find a server via MLFLOW_TRACKING_URI.
    if args.params == DEFAULT_PARAMS and not Path(DEFAULT_PARAMS).is_file():
        return Params()
    return load_params(args.params)


def _registry(args: argparse.Namespace) -> tuple[Params, Any, Any]:
    """Params, the MLflow connection and its client."""
    from cnnpipe.tracking.runs import connect

    params = _params(args)
    conn = connect(params.tracking, Path(args.params).resolve().parent)
    return params, conn, conn.client()


# --------------------------------------------------------------------------------------
# Registry commands
# --------------------------------------------------------------------------------------


def cmd_promote(args: argparse.Namespace) -> int:
    from cnnpipe.registry import promotion as registry

    params, conn, client = _registry(args)
    gate = registry.gate_for(params.register, args.name)
    decision = registry.promote(client, gate, args.version, force=args.force, lock=registry.lock_path(conn.uri))
    champion = registry.alias_version(client, args.name, registry.CHAMPION)
    if decision.promote:
        print(f"{args.name}: version {champion.version} is @champion: {decision.reason}")
        return 0
    print(f"{args.name}: not promoted: {decision.reason}", file=sys.stderr)
    return 1


def cmd_rollback(args: argparse.Namespace) -> int:
    from cnnpipe.registry import promotion as registry

    _, conn, client = _registry(args)
    before = registry.alias_version(client, args.name, registry.CHAMPION)
    now = registry.rollback(client, args.name, lock=registry.lock_path(conn.uri))
    print(f"{args.name}: version {now} is @champion again (was version {before.version if before else '-'})")
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    from cnnpipe.registry import promotion as registry

    _, _, client = _registry(args)
    info = registry.describe(client, args.ref)
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    aliases = " ".join(f"@{a}" for a in info["aliases"]) or "(no alias)"
    print(f"{info['name']} version {info['version']} {aliases}")
    print(f"  MLflow run:       {info['run_id']} (parent run: {info['parent_run_id'] or '-'})")
    print(f"  Prefect flow run: {info['prefect_flow_run_id'] or '- (not run under Prefect)'}")
    print(f"  git commit:       {info['git_commit']} (dirty: {info['git_dirty']})")
    print("  DVC data hashes:")
    for name, value in info["dvc"].items():
        print(f"    {name:<12} {value}")
    print(f"  test set:         {info['test_set']}")
    print("  metrics:          " + ", ".join(f"{k}={v:.4g}" for k, v in info["metrics"].items()))
    print("  params:")
    for key, value in info["params"].items():
        print(f"    {key} = {value}")
    print("  history:")
    for event in info["history"]:
        print(f"    {event['time']} {event['event']} by {event.get('actor', '?')}: {event.get('reason', '')}")
    return 0


# --------------------------------------------------------------------------------------
# predict
# --------------------------------------------------------------------------------------


def read_image(path: Path) -> Any:
    """A PNG/JPEG (or any Pillow) file as a grayscale PIL image, whatever its mode; a directory,
    a non-image, a corrupt or an oversized image fails naming the path."""
    from PIL import Image, UnidentifiedImageError

    if path.is_dir():
        raise CnnpipeError(f"{path}: is a directory; give image files (PNG or JPEG)")
    if not path.is_file():
        raise CnnpipeError(f"{path}: no such file")
    try:
        with Image.open(path) as image:
            image.load()
            return to_gray(image)
    except Image.DecompressionBombError as err:
        raise CnnpipeError(f"{path}: refusing to decode an image this large ({err})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise CnnpipeError(f"{path}: not a readable image (PNG or JPEG expected): {err}") from None


def to_gray(image: Any) -> Any:
    """Any Pillow image as 8-bit grayscale (mode ``L``), its intensities kept: 16-bit and float
    images are scaled, not clipped; transparent pixels become the black background the models
    were trained on; EXIF rotation is applied."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16") or (image.mode == "I" and values.max(initial=0) > 255):
            values = values / 257.0  # 16-bit range to 8-bit
        elif image.mode == "F" and values.max(initial=0) <= 1.0:
            values = values * 255.0  # float images in [0, 1]
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
    if "A" in image.mode or "transparency" in image.info:
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("L")
    try:
        return image.convert("L")
    except ValueError:  # modes Pillow cannot turn into L directly (LAB)
        return image.convert("RGB").convert("L")


def model_input(image: Any, shape: Sequence[int]) -> np.ndarray:
    """A grayscale image as one input ``(1, H, W, C)`` float32 in [0, 1] for a model whose
    input is ``(H, W, C)`` (resized; gray repeated for 3-channel models)."""
    from PIL import Image

    height, width, channels = shape
    resized = image.resize((width, height), Image.Resampling.BILINEAR)
    x = np.asarray(resized, dtype=np.float32)[None, :, :, None] / 255.0
    return np.repeat(x, channels, axis=-1) if channels != 1 else x


@dataclass(frozen=True)
class Prediction:
    path: Path
    label: str | None = None
    probability: float | None = None
    box: tuple[int, int, int, int] | None = None  # x, y, w, h in the input image's pixels
    mask_path: Path | None = None
    coverage: float | None = None  # foreground share of the mask

    def __str__(self) -> str:
        if self.mask_path is not None:
            return f"{self.path}: mask -> {self.mask_path} (foreground {self.coverage:.1%})"
        text = f"{self.path}: {self.label} (p={self.probability:.3f})"
        if self.box is not None:
            text += " box x={} y={} w={} h={} px".format(*self.box)
        return text


def predict_image(model: Any, kind: str, class_names: Sequence[str], path: Path, image: Any) -> Prediction:
    """Run ``model`` (a Keras model or a :mod:`cnnpipe.export` predictor) on the image read from
    ``path``: a class, a class + box (in the image's pixels), or a mask written beside the input
    as ``<stem>.mask.png``."""
    from PIL import Image

    from cnnpipe.serving.export import KerasPredictor

    if not hasattr(model, "backend"):  # a Keras model rather than a cnnpipe.export predictor
        model = KerasPredictor(model)
    width, height = image.size
    out = model(model_input(image, model.input_shape[1:]))

    def top(probs: np.ndarray) -> tuple[str, float]:
        k = int(np.argmax(probs))
        return (class_names[k] if k < len(class_names) else str(k)), float(probs[k])

    if kind == "mask":
        prob = np.asarray(out)[0]
        labels = (prob[..., 0] >= 0.5) if prob.shape[-1] == 1 else np.argmax(prob, axis=-1)
        scale = 255 if prob.shape[-1] == 1 else 1  # binary: visible black/white; multiclass: label ids
        mask = Image.fromarray((labels * scale).astype(np.uint8)).resize((width, height), Image.Resampling.NEAREST)
        target = path.with_name(f"{path.stem}.mask.png")
        mask.save(target)
        return Prediction(path, mask_path=target, coverage=float(np.mean(labels != 0)))
    if kind == "box":
        label, p = top(np.asarray(out["class"])[0])
        bx, by, bw, bh = np.asarray(out["box"], dtype=np.float64)[0]  # fractions of the side
        box = (round(bx * width), round(by * height), round(bw * width), round(bh * height))
        return Prediction(path, label, p, box=box)
    label, p = top(np.asarray(out)[0])
    return Prediction(path, label, p)


def load_registered_model(version: Any) -> Any:
    """The Keras model of a registered version, loaded like any stage loads one: safe mode (no
    Lambda bytecode), never a TensorFlow SavedModel a tampered MLmodel file could point at."""
    import tempfile

    import mlflow.artifacts
    from mlflow.models import Model

    from cnnpipe.errors import ModelError
    from cnnpipe.training.outputs import load_model

    uri = f"models:/{version.name}/{version.version}"
    with tempfile.TemporaryDirectory(prefix="cnnpipe-predict-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=tmp))
        try:
            flavor = Model.load(str(local / "MLmodel")).flavors.get("keras")
        except Exception as err:  # noqa: BLE001 - any unreadable MLmodel file
            raise ModelError(f"{uri}: no readable MLmodel file ({type(err).__name__}: {err})") from None
        if not flavor or flavor.get("save_exported_model"):
            raise ModelError(f"{uri}: not a .keras model (flavor {flavor!r}); predict loads only those, in safe mode")
        path = local / flavor.get("data", "data")
        path = (path / "model.keras") if path.is_dir() else path.with_name(path.name + ".keras")
        try:
            return load_model(path, producer="register")
        except ModelError as err:
            raise ModelError(f"{uri}: {err}") from None


def cmd_predict(args: argparse.Namespace) -> int:
    from cnnpipe.registry import promotion as registry

    _, _, client = _registry(args)
    version = registry.resolve(client, args.ref)
    images = {Path(p): read_image(Path(p)) for p in args.images}  # bad files fail before the download
    model = load_registered_model(version)
    kind = version.tags.get("cnnpipe.kind", "class")
    names = json.loads(version.tags.get("cnnpipe.class_names", "[]"))
    predictor = _predictor(model, [model_input(image, model.input_shape[1:]) for image in images.values()],
                           args.backend)
    for path, image in images.items():
        print(predict_image(predictor, kind, names, path, image))
    return 0


def _predictor(model: Any, inputs: list[np.ndarray], backend: str) -> Any:
    """The fastest backend allowed by ``--backend`` whose outputs match Keras on these inputs
    plus a few seeded random ones (parity); Keras when none does."""
    from cnnpipe.serving import export

    if backend == "keras":
        return export.KerasPredictor(model)
    noise = np.random.default_rng(0).random((8, *inputs[0].shape[1:]), dtype=np.float32)
    probe = np.concatenate([*inputs, noise])
    backends = export.BACKENDS if backend == "auto" else (backend,)
    predictor, checks = export.choose_predictor(model, probe, backends, cache=export.cache_dir())
    for check in checks:
        outcome = "passed" if check.passed else "FAILED"
        log.info("parity %s: %s (max |diff| %.2g on %d inputs)", check.backend, outcome, check.max_abs_diff, check.n)
    log.info("predicting with %s", predictor.backend)
    return predictor


# --------------------------------------------------------------------------------------
# Pipeline runs and the UI
# --------------------------------------------------------------------------------------


def _quiet_prefect() -> None:
    # The ephemeral Prefect server would send telemetry (and contend for its SQLite file doing it).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def cmd_run(args: argparse.Namespace) -> int:
    _quiet_prefect()
    from pipelines.training import training_flow

    statuses = training_flow(project_dir=str(Path(args.params).resolve().parent),
                             params_file=Path(args.params).name)
    for stage, status in statuses.items():
        print(f"{stage}: {status}")
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    _quiet_prefect()
    from pipelines import schedules

    if args.dry_run:
        for when in schedules.next_run_times(args.cron, args.count, timezone=args.timezone):
            print(when.isoformat())
        return 0
    if not os.environ.get("PREFECT_API_URL"):
        print("note: PREFECT_API_URL is not set, so the schedule lives in a temporary Prefect server "
              "for as long as this process runs; start `prefect server start` and export "
              "PREFECT_API_URL=http://127.0.0.1:4200/api to keep it and see it in the UI", file=sys.stderr)
    schedules.serve(args.cron, project_dir=str(Path(args.params).resolve().parent),
                    params_file=Path(args.params).name, timezone=args.timezone)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from cnnpipe.tracking import lineage
    from cnnpipe.tracking import runs as tracking

    params = _params(args)
    root = lineage.store_root(lineage.project_root(Path(args.params).resolve().parent))
    uri = tracking.resolve_uri(params.tracking, root)
    if uri != tracking.embedded_uri(root):
        print(f"runs are tracked at {tracking.redact(uri)}: open that server's UI instead")
        return 0
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
               "--default-artifact-root", (root / tracking.STORE_ARTIFACTS).as_uri(),
               "--host", "127.0.0.1", "--port", str(args.port)]
    print(f"MLflow UI on http://127.0.0.1:{args.port} (store {uri})", flush=True)
    os.execv(sys.executable, command)  # replaces this process: Ctrl-C stops the UI directly
    return 0  # not reached


# --------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnpipe", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=DEFAULT_PARAMS, help="params file (default: params.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("promote", help="promote a version (default: @challenger) through the gates")
    p.add_argument("name", help="registered model name, e.g. cnnpipe-classifier")
    p.add_argument("--version", help="version number (default: the @challenger)")
    p.add_argument("--force", action="store_true", help="promote even if the gates refuse (recorded)")
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("rollback", help="make @previous the @champion again")
    p.add_argument("name")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("lineage", help="what produced a version: commit, data hashes, params, runs, history")
    p.add_argument("ref", help="NAME, NAME@ALIAS or NAME/VERSION (NAME alone: @champion)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_lineage)

    p = sub.add_parser("predict", help="predict image files with a registered model")
    p.add_argument("ref", help="NAME, NAME@ALIAS or NAME/VERSION (NAME alone: @champion)")
    p.add_argument("images", nargs="+", help="PNG/JPEG files (converted to grayscale, resized)")
    p.add_argument("--backend", choices=("auto", "tflite", "keras"), default="auto",
                   help="auto (default): the fastest that matches Keras (TFLite, else Keras)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("run", help="run the pipeline as a Prefect flow (stages through DVC)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("schedule", help="run the pipeline on a cron schedule (Prefect serve)")
    p.add_argument("--cron", required=True, help='cron expression, e.g. "0 3 * * *"')
    p.add_argument("--timezone", default="UTC", help="IANA time zone of the cron (default: UTC)")
    p.add_argument("--dry-run", action="store_true", help="print the next run times and exit")
    p.add_argument("--count", type=int, default=5, help="run times printed by --dry-run")
    p.set_defaults(func=cmd_schedule)

    p = sub.add_parser("ui", help="the MLflow UI on the embedded store, on 127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=cmd_ui)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cnnpipe`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("cnnpipe").setLevel(logging.INFO)  # our progress lines; libraries stay quiet
    try:
        return args.func(args)
    except CnnpipeError as err:
        print(f"cnnpipe {args.command}: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        from cnnpipe.io import WRITE_ERRNOS

        if err.errno not in WRITE_ERRNOS:
            raise
        print(f"cnnpipe {args.command}: {err}", file=sys.stderr)  # e.g. the mask file cannot be written
        return 1


if __name__ == "__main__":
    sys.exit(main())
