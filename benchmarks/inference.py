"""Inference: single-image latency (p50, p95) and batch throughput of every trained model through
Keras ``model(x)``, ``model.predict`` and its TFLite export, with the export's parity on the test set."""

from __future__ import annotations

import time

import numpy as np

from benchmarks.runner import Context, Result

MODELS = {
    "classifier": ("classifier.keras", "classification"),
    "transfer (fine-tuned)": ("transfer/fine_tuning.keras", "scenes"),
    "localizer": ("localizer.keras", "scenes"),
    "unet": ("unet.keras", "scenes"),
}
BATCH = 256


def _test_images(ctx: Context, which: str, n: int | None) -> np.ndarray:
    from cnnpipe.data.prepared import PreparedSet

    x = PreparedSet.open(ctx.prepared / ("classification" if which == "classification" else "scenes")).load("test").images
    x = x[:n] if n else x
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


def latency_ms(fn, x: np.ndarray, n: int) -> dict[str, float]:
    """p50/p95 of ``fn`` on single images (each call one image, cycling through ``x``)."""
    for i in range(5):
        fn(x[i:i + 1])
    times = []
    for i in range(n):
        one = x[i % len(x):i % len(x) + 1]
        start = time.perf_counter()
        fn(one)
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return {"p50": times[len(times) // 2], "p95": times[int(0.95 * (len(times) - 1))]}


def throughput(fn, x: np.ndarray, repeats: int) -> float:
    """Images/s of ``fn`` on batches of ``BATCH`` over ``x`` (best of ``repeats`` passes)."""
    fn(x[:BATCH])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(x) - BATCH + 1, BATCH):
            fn(x[i:i + BATCH])
        best = min(best, time.perf_counter() - start)
    return (len(x) // BATCH) * BATCH / best


def run(ctx: Context) -> Result:
    from cnnpipe.serving import export
    from cnnpipe.training.outputs import load_model

    result = Result()
    n_single, repeats = ctx.pick(50, 200), ctx.pick(1, 3)
    for name, (file, data) in MODELS.items():
        path = ctx.models / file
        if not path.exists():
            result.row(name, "skipped", f"{path} missing")
            continue
        model = load_model(path, "bench")
        policy = "float32" if export.float32_model(model) is model else "mixed_bfloat16"  # its layers' policy
        x = _test_images(ctx, data, ctx.pick(512, None))
        bench_x = x[:ctx.pick(BATCH * 2, BATCH * 8)]
        backends = {
            "keras model(x)": export.KerasPredictor(model),
            "keras predict": lambda b, model=model: model.predict(b, batch_size=BATCH, verbose=0),
        }
        start = time.perf_counter()
        try:
            backends["tflite"] = export.TFLitePredictor(export.to_tflite(model), model.input_shape)
        except export.ExportError as err:  # Keras rows still count; `cnnpipe predict` uses Keras for it
            export_error = str(err)
            result.row(f"{name}: tflite", "not exported", export_error)
        convert_s = time.perf_counter() - start
        figures = {}
        for backend, fn in backends.items():
            lat = latency_ms(fn, x, n_single)
            rate = throughput(fn, bench_x, repeats)
            figures[backend] = {"p50_ms": round(lat["p50"], 3), "p95_ms": round(lat["p95"], 3),
                                "batch_images_per_s": round(rate, 1)}
            result.row(f"{name}: {backend}", f"p50 {lat['p50']:.2f} ms, p95 {lat['p95']:.2f} ms",
                       f"batch {BATCH}: {rate:.0f} img/s")
        if "tflite" not in backends:
            result.data[name] = {"policy": policy, "export_error": export_error, "backends": figures}
            continue
        # Parity on the (whole) test set: TFLite vs the same weights in Keras float32, and, for
        # the record, vs the model as trained (mixed bfloat16 where the CPU has it).
        out_tflite = export.predict_batched(backends["tflite"], x, BATCH)
        parity = export.compare(export.predict_batched(export.KerasPredictor(export.float32_model(model)), x, BATCH),
                                out_tflite, "tflite")
        as_trained = export.compare(export.predict_batched(backends["keras model(x)"], x, BATCH), out_tflite, "tflite")
        result.data[name] = {
            "policy": policy, "convert_s": round(convert_s, 1), "backends": figures,
            "parity": parity.to_dict(), "vs_as_trained": as_trained.to_dict(), "test_images": len(x),
        }
        agree = "" if parity.argmax_agreement is None else f", argmax agreement {parity.argmax_agreement:.2%}"
        trained = "" if as_trained.argmax_agreement is None else (
            f"; vs the model as trained ({policy}): argmax {as_trained.argmax_agreement:.2%}")
        result.row(f"{name}: tflite parity", "passed" if parity.passed else "FAILED",
                   f"max |diff| {parity.max_abs_diff:.1e} on {len(x)} test images{agree}{trained}")
    return result
