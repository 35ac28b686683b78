"""Training sections: pipeline overhead against plain Keras, the machine's limit, CPU tuning and
time to accuracy. Every run trains on the project's real prepared arrays (read only) and
writes only to a temp directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.runner import Context, Result

# ---------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------


def _keras():
    import keras

    return keras


class EpochIntervals:
    """Wall time from the end of one epoch to the end of the next: everything the fit loop
    does per epoch (steps, validation, every callback's epoch-end work) is inside it. Placed
    last among the callbacks, so it closes each epoch after the pipeline's checkpoint."""

    def __new__(cls):
        keras = _keras()

        class _Intervals(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.last = time.perf_counter()
                self.seconds: list[float] = []
                self.steps: list[int] = []  # training batches per epoch: what was timed

            def on_epoch_begin(self, epoch, logs=None):
                self.steps.append(0)

            def on_train_batch_end(self, batch, logs=None):
                self.steps[-1] += 1

            def on_epoch_end(self, epoch, logs=None):
                now = time.perf_counter()
                self.seconds.append(now - self.last)
                self.last = now

        return _Intervals()


def steady(seconds: list[float]) -> float:
    """The best epoch after the first (which traces and compiles); the least disturbed by the
    other processes sharing the cores."""
    rest = seconds[1:] or seconds
    return min(rest)


def _deterministic(on: bool, seed: int) -> None:
    import tensorflow as tf

    keras = _keras()
    keras.utils.set_random_seed(seed)
    if on:
        tf.config.experimental.enable_op_determinism()
    else:  # a plain script never turns it on; TF exports only the switch that does
        from tensorflow.python.framework import config as tf_config

        tf_config.disable_op_determinism()


@dataclass
class StageBench:
    """One training stage as the pipeline runs it and as a plain Keras script would."""

    name: str
    batch_size: int
    val_batch_size: int
    steps: int  # per epoch: both sides see exactly steps * batch_size images each epoch
    pipeline: Callable[[Path, tuple], Any]  # (tmp dir, callbacks) -> FitResult
    build: Callable[[], Any]  # the same model, fresh
    compile_args: dict[str, Any]
    x: np.ndarray  # float32 in [0, 1], what a plain script feeds model.fit
    y: Any
    x_val: np.ndarray
    y_val: Any


def _subset(split, n: int):
    from cnnpipe.data.prepared import Split

    take = lambda a: None if a is None else a[:n]  # noqa: E731
    return Split(images=split.images[:n], labels=split.labels[:n], boxes=take(split.boxes), masks=take(split.masks))


def _float(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)


def _stage_benches(ctx: Context, epochs: int) -> list[StageBench]:
    keras = _keras()
    from cnnpipe.config import load_params
    from cnnpipe.data.prepared import PreparedSet
    from cnnpipe.models.backbone import build_backbone
    from cnnpipe.models.classifier import build_classifier
    from cnnpipe.models.localizer import build_localizer
    from cnnpipe.models.losses import BoxLoss, DiceCrossentropy
    from cnnpipe.models.metrics import BoxIoU, DiceScore
    from cnnpipe.models.unet import build_unet
    from cnnpipe.training.classifier import train_classifier
    from cnnpipe.training.fit import fingerprint, fit_model
    from cnnpipe.training.precision import precision_policy
    from cnnpipe.training.localizer import train_localizer
    from cnnpipe.training.outputs import TrainOutputs
    from cnnpipe.training.transfer import few_label_subset, transfer_model
    from cnnpipe.training.unet import mask_targets, train_unet

    params = load_params(ctx.root / "params.yaml")
    seed, augment = ctx.seed, params.augment
    cls, scn = PreparedSet.open(ctx.prepared / "classification"), PreparedSet.open(ctx.prepared / "scenes")
    n_cls = len(cls.class_names)
    outs = lambda tmp, name: TrainOutputs.named(tmp / "models", tmp / "plots", name)  # noqa: E731
    # Like for like: the plain script has no augmentation, so the pipeline runs without it here
    # (its cost is reported separately in the tuning section).
    fit_of = lambda section, steps: section.fit.model_copy(update={  # noqa: E731
        "epochs": epochs, "steps_per_epoch": steps, "augment": False, "patience": epochs + 1})
    adamw = lambda fit: keras.optimizers.AdamW(fit.learning_rate, weight_decay=fit.weight_decay)  # noqa: E731
    benches = []

    # --- classifier
    p = params.train_classifier
    steps = ctx.pick(12, 100)
    fit = fit_of(p, steps)
    train = _subset(cls.load("train"), steps * fit.batch_size)
    val = _subset(cls.load("val"), ctx.pick(512, 2048))
    one_hot = lambda y: np.eye(n_cls, dtype=np.float32)[y]  # noqa: E731
    cp = p.model_copy(update={"fit": fit})

    def build_cls(p=p, fit=fit, shape=train.images.shape[1:]):
        with precision_policy(fit.precision):
            return build_classifier(tuple(shape), n_cls, p.filters, p.convs_per_block, p.dropout, p.dense)

    benches.append(StageBench(
        "train_classifier", fit.batch_size, 512, steps,
        lambda tmp, cbs, train=train, val=val, cp=cp: train_classifier(
            train, val, n_cls, cp, augment, seed, outs(tmp, "classifier"), callbacks=cbs),
        build_cls,
        dict(optimizer=lambda fit=fit: adamw(fit), loss=keras.losses.CategoricalCrossentropy(label_smoothing=p.label_smoothing),
             metrics=["accuracy"]),
        _float(train.images), one_hot(train.labels), _float(val.images), one_hot(val.labels)))

    # --- transfer (the scratch phase: the only one whose whole network trains, at full size)
    t = params.transfer
    scenes_train, scenes_val = scn.load("train"), scn.load("val")
    few = few_label_subset(scenes_train, t.labels_per_class, n_cls, seed, "train")
    few_val = few_label_subset(scenes_val, t.val_per_class, n_cls, seed + 1, "val")
    steps = few.images.shape[0] // t.fit.batch_size
    fit = fit_of(t, steps)
    few = _subset(few, steps * fit.batch_size)
    cpar = params.train_classifier

    # The stage's own scratch network (the image pyramid over the classifier-shaped base);
    # backbone "none" builds exactly it without needing a trained classifier on disk.
    scratch_params = t.model_copy(update={"backbone": "none"})

    def build_transfer(fit=fit, shape=few.images.shape[1:]):
        with precision_policy(fit.precision):
            return transfer_model(scratch_params, None, cpar, tuple(shape), n_cls, pretrained=False)

    def transfer_pipeline(tmp, cbs, fit=fit, few=few, few_val=few_val, steps=steps):
        from cnnpipe.data.pipeline import make_dataset

        o = outs(tmp, "transfer_scratch")
        return fit_model(
            build_transfer(), make_dataset(few.images, few.labels.astype(np.int32), batch_size=fit.batch_size,
                                           training=True, seed=seed),
            make_dataset(few_val.images, few_val.labels.astype(np.int32), batch_size=256, training=False, seed=seed),
            fit=fit, loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"], steps_per_epoch=steps,
            checkpoint_dir=o.checkpoint_dir, history_csv=o.history_csv, run_fingerprint=fingerprint("bench"),
            callbacks=cbs)

    benches.append(StageBench(
        "transfer (scratch)", fit.batch_size, 256, steps, transfer_pipeline, build_transfer,
        dict(optimizer=lambda fit=fit: adamw(fit), loss=keras.losses.SparseCategoricalCrossentropy(),
             metrics=["accuracy"]),
        _float(few.images), few.labels.astype(np.int32), _float(few_val.images), few_val.labels.astype(np.int32)))

    # --- localizer (backbone from scratch: the same FLOPs as the pretrained one)
    lp = params.train_localizer
    steps = ctx.pick(6, 30)
    fit = fit_of(lp, steps)
    train = _subset(scenes_train, steps * fit.batch_size)
    val = _subset(scenes_val, ctx.pick(256, 1024))
    lpar = lp.model_copy(update={"fit": fit})
    targets = lambda s: {"class": s.labels.astype(np.int32), "box": s.boxes.astype(np.float32)}  # noqa: E731

    def build_loc(fit=fit, shape=train.images.shape[1:]):
        with precision_policy(fit.precision):
            return build_localizer(build_backbone(cpar.filters, cpar.convs_per_block), tuple(shape), n_cls, lp.dropout)

    benches.append(StageBench(
        "train_localizer", fit.batch_size, 256, steps,
        lambda tmp, cbs, train=train, val=val, lpar=lpar: train_localizer(
            train, val, n_cls, lpar, augment, seed, outs(tmp, "localizer"), None, cpar, callbacks=cbs),
        build_loc,
        dict(optimizer=lambda fit=fit: adamw(fit),
             loss={"class": keras.losses.SparseCategoricalCrossentropy(), "box": BoxLoss()},
             loss_weights={"class": 1.0, "box": lp.box_loss_weight},
             metrics={"class": ["accuracy"], "box": [BoxIoU()]}),
        _float(train.images), targets(train), _float(val.images), targets(val)))

    # --- U-Net
    up = params.train_unet
    steps = ctx.pick(6, 30)
    fit = fit_of(up, steps)
    train = _subset(scenes_train, steps * fit.batch_size)
    val = _subset(scenes_val, ctx.pick(256, 1024))
    upar = up.model_copy(update={"fit": fit})
    n_out = n_cls + 1 if up.multiclass else 1

    def build_u(fit=fit, shape=train.images.shape[1:]):
        with precision_policy(fit.precision):
            return build_unet(tuple(shape), up.filters, n_out)

    benches.append(StageBench(
        "train_unet", fit.batch_size, 256, steps,
        lambda tmp, cbs, train=train, val=val, upar=upar: train_unet(
            train, val, n_cls, upar, augment, seed, outs(tmp, "unet"), callbacks=cbs),
        build_u,
        dict(optimizer=lambda fit=fit: adamw(fit), loss=DiceCrossentropy(up.dice_weight, up.multiclass),
             metrics=[DiceScore(up.multiclass)]),
        _float(train.images), mask_targets(train, n_cls, up.multiclass), _float(val.images),
        mask_targets(val, n_cls, up.multiclass)))
    return benches


def _plain_keras(b: StageBench, epochs: int, seed: int) -> Any:
    """What a user's one-file Keras script does: build, compile, ``model.fit`` on arrays."""
    _deterministic(False, seed)
    model = b.build()
    args = dict(b.compile_args)
    model.compile(optimizer=args.pop("optimizer")(), **args)
    timer = EpochIntervals()
    model.fit(b.x, b.y, batch_size=b.batch_size, epochs=epochs, validation_data=(b.x_val, b.y_val),
              validation_batch_size=b.val_batch_size, callbacks=[timer], verbose=0)
    return timer


def _pipeline(b: StageBench, seed: int) -> Any:
    """The stage's own task function (tf.data input, fit_model with its checkpoints, CSV,
    early stopping), seeded and deterministic as the stage shell sets it."""
    _deterministic(True, seed)
    timer = EpochIntervals()
    with tempfile.TemporaryDirectory(prefix="cnnpipe-bench-") as tmp:
        b.pipeline(Path(tmp), (timer,))
    return timer


def overhead(ctx: Context) -> Result:
    """Images/s of each training stage through the pipeline vs a plain Keras script."""
    result = Result()
    epochs = 3  # the first traces and compiles; the best of the other two counts
    for b in _stage_benches(ctx, epochs):
        images = b.steps * b.batch_size
        timers = {"pipeline": _pipeline(b, ctx.seed), "plain_keras": _plain_keras(b, epochs, ctx.seed)}
        steps = {k: set(t.steps) for k, t in timers.items()}
        if any(ran != {b.steps} for ran in steps.values()):
            raise RuntimeError(f"{b.name}: the two sides ran different work, steps per epoch {steps} "
                               f"(expected {b.steps}); the ratio would be meaningless")
        runs = {k: t.seconds[1:] for k, t in timers.items()}
        rate = {k: images / min(v) for k, v in runs.items()}
        ratio = rate["pipeline"] / rate["plain_keras"]
        result.data[b.name] = {
            "images_per_epoch": images, "batch_size": b.batch_size, "epochs_timed": len(runs["pipeline"]),
            "epoch_seconds": {k: [round(s, 3) for s in v] for k, v in runs.items()},
            "pipeline_images_per_s": round(rate["pipeline"], 1), "plain_images_per_s": round(rate["plain_keras"], 1),
            "ratio": round(ratio, 3),
        }
        result.row(f"{b.name} images/s pipeline | plain", f"{rate['pipeline']:.0f} | {rate['plain_keras']:.0f}",
                   f"ratio {ratio:.3f} (target >= 0.95); {images} img/epoch, batch {b.batch_size}")
    return result


# ---------------------------------------------------------------------------------------
# The limit: achieved GFLOP/s against a measured matmul peak
# ---------------------------------------------------------------------------------------


def forward_flops(model: Any) -> float:
    """Floating-point operations of one forward pass on one example (TF's profiler on the
    frozen float32 graph: convolutions, matmuls, element-wise ops)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    from cnnpipe.serving.export import float32_model

    fp32 = float32_model(model)
    spec = tf.TensorSpec((1, *fp32.input_shape[1:]), tf.float32)
    frozen = convert_variables_to_constants_v2(tf.function(lambda x: fp32(x, training=False)).get_concrete_function(spec))
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    return float(tf.compat.v1.profiler.profile(graph=frozen.graph, options=opts).total_float_ops)


def matmul_peak(n: int, dtype: str, seconds: float) -> float:
    """GFLOP/s of an n x n matmul, repeated for about ``seconds`` (best of the repeats)."""
    import tensorflow as tf

    a = tf.random.uniform((n, n), dtype=tf.float32)
    b = tf.random.uniform((n, n), dtype=tf.float32)
    if dtype == "bfloat16":
        a, b = tf.cast(a, tf.bfloat16), tf.cast(b, tf.bfloat16)
    mm = tf.function(lambda a, b: tf.linalg.matmul(a, b))
    mm(a, b).numpy()
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        mm(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def classifier_step_rate(ctx: Context, precision: str, steps: int) -> float:
    """Images/s of the default classifier's training step (fit on an in-memory repeated batch:
    no input pipeline, no callbacks), best of a few timed chunks."""
    import tensorflow as tf

    keras = _keras()
    from cnnpipe.config import load_params
    from cnnpipe.models.classifier import build_classifier
    from cnnpipe.training.precision import precision_policy

    p = load_params(ctx.root / "params.yaml").train_classifier
    with precision_policy(precision):
        model = build_classifier((28, 28, 1), 10, p.filters, p.convs_per_block, p.dropout, p.dense)
    model.compile(keras.optimizers.AdamW(1e-3), keras.losses.CategoricalCrossentropy(), jit_compile=False)
    rng = np.random.default_rng(0)
    x = rng.random((p.fit.batch_size, 28, 28, 1), dtype=np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, p.fit.batch_size)]
    ds = tf.data.Dataset.from_tensors((x, y)).repeat()
    timer = EpochIntervals()
    model.fit(ds, steps_per_epoch=steps, epochs=4, callbacks=[timer], verbose=0)
    return steps * p.fit.batch_size / steady(timer.seconds)


def limit(ctx: Context) -> Result:
    from cnnpipe.config import load_params
    from cnnpipe.models.classifier import build_classifier
    from cnnpipe.training.precision import resolve_precision

    result = Result()
    p = load_params(ctx.root / "params.yaml").train_classifier
    fwd = forward_flops(build_classifier((28, 28, 1), 10, p.filters, p.convs_per_block, p.dropout, p.dense))
    train_flops = 3 * fwd  # forward + backward (about twice the forward)
    n, secs = ctx.pick(1024, 2048), ctx.pick(2.0, 8.0)
    peak = {dtype: matmul_peak(n, dtype, secs) for dtype in ("float32", "bfloat16")}
    steps = ctx.pick(10, 60)
    rates = {prec: classifier_step_rate(ctx, prec, steps) for prec in dict.fromkeys((resolve_precision("auto"), "float32"))}
    result.data = {"forward_mflop_per_image": round(fwd / 1e6, 2), "train_mflop_per_image": round(train_flops / 1e6, 2),
                   "matmul_n": n, "peak_gflops": {k: round(v, 1) for k, v in peak.items()}, "classifier": {}}
    result.row("classifier FLOPs/image", f"{fwd / 1e6:.1f} M fwd, {train_flops / 1e6:.0f} M train", "train = 3 x forward")
    for dtype, value in peak.items():
        result.row(f"matmul peak {dtype}", f"{value:.0f} GFLOP/s", f"{n}x{n}, best of {secs:.0f} s")
    for prec, rate in rates.items():
        achieved = rate * train_flops / 1e9
        result.data["classifier"][prec] = {"images_per_s": round(rate, 1), "gflops": round(achieved, 1),
                                           "of_fp32_peak": round(achieved / peak["float32"], 3),
                                           "of_bf16_peak": round(achieved / peak["bfloat16"], 3)}
        result.row(f"classifier train step, {prec}", f"{rate:.0f} img/s = {achieved:.0f} GFLOP/s",
                   f"{achieved / peak['float32']:.0%} of fp32 peak, {achieved / peak['bfloat16']:.0%} of bf16 peak")
    return result


# ---------------------------------------------------------------------------------------
# Tuning: one subprocess per setting (thread pools and oneDNN are fixed at TF start-up)
# ---------------------------------------------------------------------------------------

PROBE = """
import json, os, sys, time
import numpy as np
import tensorflow as tf
threads = int(os.environ.get("BENCH_THREADS", "0"))
if threads:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
from benchmarks.runner import Context
from benchmarks.training import classifier_step_rate
ctx = Context(quick=True)
print(json.dumps({"rate": classifier_step_rate(ctx, sys.argv[1], int(sys.argv[2]))}))
"""

SETTINGS = {
    "default (bf16, oneDNN on, TF threads)": ({}, "mixed_bfloat16"),
    "float32": ({}, "float32"),
    "oneDNN off (TF_ENABLE_ONEDNN_OPTS=0), float32": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, "float32"),
    "oneDNN off, bf16 (emulated by Eigen)": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, "mixed_bfloat16"),
    "1 intra/inter-op thread": ({"BENCH_THREADS": "1"}, "mixed_bfloat16"),
    "4 intra/inter-op threads (oversubscribed)": ({"BENCH_THREADS": "4"}, "mixed_bfloat16"),
}


def _probe(ctx: Context, env_extra: dict[str, str], precision: str, steps: int) -> float:
    from cnnpipe.training.precision import resolve_precision

    if precision == "mixed_bfloat16":
        precision = resolve_precision("auto")  # float32 where the CPU has no bfloat16
    env = {**os.environ, **env_extra, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", PROBE, precision, str(steps)], cwd=ctx.root, env=env,
                         capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])["rate"]


def input_pipeline_rate(ctx: Context, augment: bool, n_batches: int) -> float:
    """Images/s the classifier's tf.data pipeline produces alone (no model)."""
    from cnnpipe.config import load_params
    from cnnpipe.data.augment import augment_images
    from cnnpipe.data.pipeline import make_dataset
    from cnnpipe.data.prepared import PreparedSet

    params = load_params(ctx.root / "params.yaml")
    train = PreparedSet.open(ctx.prepared / "classification").load("train")
    aug = (lambda x, y, s: (augment_images(x, params.augment, s), y)) if augment else None
    bs = params.train_classifier.fit.batch_size
    ds = make_dataset(train.images, train.labels, batch_size=bs, training=True, seed=ctx.seed, augment=aug)
    it = iter(ds)
    for _ in range(5):
        next(it)
    start = time.perf_counter()
    for _ in range(n_batches):
        next(it)
    return n_batches * bs / (time.perf_counter() - start)


def tuning(ctx: Context) -> Result:
    result = Result()
    steps = ctx.pick(10, 50)
    settings = SETTINGS if not ctx.quick else {k: SETTINGS[k] for k in list(SETTINGS)[:2]}
    rates: dict[str, float] = {}
    for name, (env, prec) in settings.items():
        # Emulated bfloat16 runs at a few dozen images/s: a few steps tell.
        n = max(2, steps // 10) if "emulated" in name else steps
        try:
            rates[name] = _probe(ctx, env, prec, n)
        except (subprocess.SubprocessError, ValueError, KeyError) as err:
            result.row(f"classifier train step: {name}", "failed", f"{type(err).__name__}")
            continue
        base = next(iter(rates.values()))
        result.row(f"classifier train step: {name}", f"{rates[name]:.0f} img/s", f"x{rates[name] / base:.2f} of default")
    result.data["classifier_step_images_per_s"] = {k: round(v, 1) for k, v in rates.items()}
    n = ctx.pick(40, 200)
    for augment in (False, True):
        rate = input_pipeline_rate(ctx, augment, n)
        name = "augmented" if augment else "plain"
        result.data[f"input_pipeline_{name}_images_per_s"] = round(rate, 1)
        result.row(f"classifier input pipeline alone, {name}", f"{rate:.0f} img/s",
                   "tf.data: shuffle, batch, parallel map, prefetch")
    return result


# ---------------------------------------------------------------------------------------
# Time to accuracy
# ---------------------------------------------------------------------------------------


def time_to_accuracy(ctx: Context) -> Result:
    """Train the default classifier recipe, test accuracy after each epoch, stop at the target."""
    keras = _keras()
    from cnnpipe.config import load_params
    from cnnpipe.data.prepared import PreparedSet
    from cnnpipe.training.classifier import train_classifier
    from cnnpipe.training.outputs import TrainOutputs

    params = load_params(ctx.root / "params.yaml")
    p = params.train_classifier
    target = ctx.pick(0.20, 0.93)  # quick: a few hundred steps, the plumbing only
    cls = PreparedSet.open(ctx.prepared / "classification")
    train, val, test = cls.load("train"), cls.load("val"), cls.load("test")
    if ctx.quick:  # a slice and two epochs: the plumbing, not the figure
        train, val, test = _subset(train, 16384), _subset(val, 1000), _subset(test, 2000)
        p = p.model_copy(update={"fit": p.fit.model_copy(update={"epochs": 2})})

    class TestAccuracy(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.start = time.perf_counter()
            self.eval_seconds = 0.0
            self.epochs: list[dict[str, float]] = []
            self.reached: dict[str, float] | None = None

        def on_epoch_end(self, epoch, logs=None):
            t0 = time.perf_counter()
            probs = self.model.predict(_float(test.images), batch_size=1024, verbose=0)
            acc = float(np.mean(np.argmax(probs, axis=1) == test.labels))
            self.eval_seconds += time.perf_counter() - t0
            wall = time.perf_counter() - self.start
            row = {"epoch": epoch + 1, "test_accuracy": round(acc, 4), "wall_s": round(wall, 1),
                   "train_s": round(wall - self.eval_seconds, 1)}
            self.epochs.append(row)
            print(f"   epoch {epoch + 1}: test accuracy {acc:.4f} at {wall:.0f} s", flush=True)
            if acc >= target and self.reached is None:
                self.reached = row
                self.model.stop_training = True

    _deterministic(True, ctx.seed)
    probe = TestAccuracy()
    with tempfile.TemporaryDirectory(prefix="cnnpipe-bench-") as tmp:
        outs = TrainOutputs.named(Path(tmp) / "models", Path(tmp) / "plots", "classifier")
        train_classifier(train, val, len(cls.class_names), p, params.augment, ctx.seed, outs, callbacks=(probe,))
    result = Result(data={"target": target, "epochs": probe.epochs, "reached": probe.reached,
                          "recipe_epochs": p.fit.epochs, "train_images": len(train.images)})
    if probe.reached:
        r = probe.reached
        result.row(f"classifier to {target} test accuracy", f"{r['train_s']:.0f} s training ({r['wall_s']:.0f} s wall)",
                   f"epoch {r['epoch']} of {p.fit.epochs}, accuracy {r['test_accuracy']:.4f} (target <= 600 s)")
    else:
        best = max(probe.epochs, key=lambda e: e["test_accuracy"])
        result.row(f"classifier to {target} test accuracy", "not reached",
                   f"best {best['test_accuracy']:.4f} at epoch {best['epoch']}, {probe.epochs[-1]['train_s']:.0f} s")
    return result
