"""The project's run lock (``.cnnpipe/run.lock``): one holder per checkout, a one-line refusal
naming the lock and the holder, re-entrant within a process, gone when its holder dies."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from cnnpipe.flows.lock import RunLocked, lock_path, run_lock

HOLD = "import sys, time; from cnnpipe.flows.lock import run_lock\nwith run_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)"


def test_a_second_holder_is_refused_in_one_line_naming_the_lock_and_the_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLocked) as err, run_lock(tmp_path):
            pass
        message = str(err.value)
        assert "\n" not in message
        assert re.fullmatch(rf"another pipeline run holds {re.escape(str(lock_path(tmp_path)))} "
                            rf"\(pid {holder.pid}: .+, since .+\); wait for it to finish", message), message
    finally:
        holder.kill()
        holder.wait()
    # The kernel released it with the process: no stale lock to clean up by hand.
    deadline = time.monotonic() + 10
    while True:
        try:
            with run_lock(tmp_path):
                break
        except RunLocked:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_the_lock_is_reentrant_within_one_process(tmp_path):
    with run_lock(tmp_path), run_lock(tmp_path) as path:  # `cnnpipe run`, then the flow it runs
        assert path == lock_path(tmp_path) and str(path).endswith(".cnnpipe/run.lock")
    with run_lock(tmp_path):  # released after the outer one
        pass
