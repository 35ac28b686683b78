"""Smoke test of the benchmark runner's plumbing (benchmarks/): sections registered in a list, a
table and a JSON file, a failing section reported without losing the others. No figure is
checked: benchmarks are figures, not timed tests."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import inference, runner, training


def test_runner_prints_one_table_writes_json_and_survives_a_failing_section(tmp_path, monkeypatch, capsys):
    def fine(ctx):
        result = runner.Result(data={"quick": ctx.quick})
        result.row("item a", "1.0 s", "note")
        return result

    def broken(ctx):
        raise RuntimeError("no data")

    monkeypatch.setattr(runner, "SECTIONS", [runner.Section("fine", fine, "ok"), runner.Section("broken", broken, "fails"),
                                             runner.Section("left_out", fine, "skipped")])
    out = tmp_path / "r.json"
    assert runner.main(["--quick", "--skip", "left_out", "--out", str(out)]) == 1
    report = json.loads(out.read_text())
    assert report["mode"] == "quick" and set(report["sections"]) == {"fine", "broken"}
    assert report["sections"]["fine"]["quick"] is True and "no data" in report["sections"]["broken"]["error"]
    printed = capsys.readouterr().out
    assert "| fine    | item a | 1.0 s" in printed and "load average" in printed
    with pytest.raises(SystemExit):
        runner.main(["--only", "nope", "--out", str(out)])


def test_the_real_sections_are_registered_in_order():
    names = [s.name for s in runner._sections()]
    assert names[:4] == ["overhead", "limit", "tuning", "time_to_accuracy"]
    assert {"scaling", "orchestration", "inference"} <= set(names)


def test_latency_and_throughput_helpers_time_the_given_function():
    calls = []
    x = np.zeros((600, 2, 2, 1), np.float32)
    lat = inference.latency_ms(lambda b: calls.append(len(b)), x, 20)
    assert set(calls) == {1} and 0 <= lat["p50"] <= lat["p95"]
    calls.clear()
    assert inference.throughput(lambda b: calls.append(len(b)), x, 2) > 0
    assert set(calls) == {inference.BATCH}


def test_forward_flops_counts_a_dense_layer():
    import keras

    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(4, use_bias=False)(inputs))
    assert training.forward_flops(model) == 2 * 8 * 4


def test_epoch_intervals_count_the_steps_each_epoch_ran():
    """The overhead section compares the two sides only when these counts agree (a stale
    ``steps`` in a closure once made the pipeline side run 2x the work)."""
    import keras

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile("sgd", "mse")
    timer = training.EpochIntervals()
    model.fit(np.zeros((24, 4), np.float32), np.zeros((24, 2), np.float32), batch_size=4, epochs=2,
              steps_per_epoch=3, callbacks=[timer], verbose=0)
    assert timer.steps == [3, 3] and len(timer.seconds) == 2


def test_a_child_process_reports_its_own_peak_memory_not_its_parents():
    """The scaling section's children must not inherit the bench process's peak (Linux's
    ru_maxrss does, across fork and exec)."""
    import subprocess
    import sys

    held = np.ones((300, 1024, 1024), np.uint8)  # 300 MiB resident in this (parent) process
    code = "from benchmarks.scaling import _peak_mib; print(_peak_mib())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=runner.ROOT).stdout
    assert held.sum() > 0 and float(out) < 200
