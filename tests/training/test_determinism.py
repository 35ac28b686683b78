"""Same seed, same data -> the same weights, in two processes: a U-Net large enough that TF runs
ops of one step concurrently (with several inter-op threads the weights differed run to run)."""

import subprocess
import sys

from project import env

_TRAIN = r"""
import hashlib, sys
from pathlib import Path
import numpy as np
from cnnpipe.config import load_params
from cnnpipe.data.prepared import Split
from cnnpipe.seeding import set_global_seed
from cnnpipe.training.outputs import TrainOutputs
from cnnpipe.training.unet import train_unet

set_global_seed(0, inter_op_threads=1)  # first, as the stages do: before any TensorFlow op
params = load_params("params.yaml")
fit = params.train_unet.fit.model_copy(update={"epochs": 1, "batch_size": 64, "precision": "auto"})
unet = params.train_unet.model_copy(update={"filters": [16, 32, 64, 128], "fit": fit})
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (256, 64, 64, 1), dtype=np.uint8)
masks = (images[..., 0] > 128).astype(np.uint8)
labels = np.zeros(256, np.uint8)
train = Split(images=images[:192], labels=labels[:192], masks=masks[:192])
val = Split(images=images[192:], labels=labels[192:], masks=masks[192:])
out = TrainOutputs.named(Path(sys.argv[1]) / "models", Path(sys.argv[1]) / "plots", "unet")
result = train_unet(train, val, 1, unet, params.augment, 0, out)
print("WEIGHTS", hashlib.sha256(b"".join(np.ascontiguousarray(w).tobytes() for w in result.model.get_weights())).hexdigest())
"""


def _train(tmp_path, name: str) -> str:
    proc = subprocess.run([sys.executable, "-c", _TRAIN, str(tmp_path / name)], check=False, env=env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return next(line for line in proc.stdout.splitlines() if line.startswith("WEIGHTS"))


def test_a_unet_trained_twice_in_two_processes_has_the_same_weights(tmp_path):
    assert _train(tmp_path, "a") == _train(tmp_path, "b")
