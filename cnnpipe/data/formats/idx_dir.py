"""IDX directory: the four MNIST file names (plain or ``.gz``) of any MNIST-like set, any image size."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from cnnpipe.config import DatasetParams
from cnnpipe.data.images import Loaded
from cnnpipe.data.items import Items, TaskData, check_labels_fit, need_dir
from cnnpipe.data.raw.download import SourceUnavailable
from cnnpipe.data.raw.fetch import FASHION_MNIST_SPLITS, find_in_dir
from cnnpipe.data.raw.idx import read_idx_pair
from cnnpipe.errors import DataError


def read_idx_dir(params: DatasetParams) -> TaskData:
    """The train and t10k image/label pairs of ``params.path``, resized to ``params.side``."""
    root = need_dir(Path(params.path), "IDX directory (datasets.classification.path)")
    names = [n for pair in FASHION_MNIST_SPLITS.values() for n in pair]
    try:
        files = find_in_dir(root, names)
    except SourceUnavailable as missing:
        raise DataError(str(missing)) from None
    raw = {split: read_idx_pair(files[i], files[l]) for split, (i, l) in FASHION_MNIST_SPLITS.items()}
    native = raw["train"][0].shape[1] if raw["train"][0].ndim >= 3 else None
    side, channels = params.side(native), params.channels
    n_labels = max((int(y.max()) + 1 for _, y in raw.values() if len(y)), default=0)
    class_names = list(params.class_names or [str(k) for k in range(n_labels)])
    if n_labels > len(class_names):
        raise DataError(f"{files['train-labels-idx1-ubyte']}: labels reach {n_labels - 1} but "
                        f"datasets.classification.class_names names {len(class_names)} classes")
    check_labels_fit(class_names, str(root))
    splits: dict[str, Items] = {}
    for split, (images, labels) in raw.items():
        if images.dtype != np.uint8:
            raise DataError(f"{files[FASHION_MNIST_SPLITS[split][0]]}: images must be uint8 (0..255), got {images.dtype}")
        items = Items()
        for k, (image, label) in enumerate(zip(images, labels)):
            array = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
            pil = Image.fromarray(array)
            digest = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
            pil = pil.convert("L" if channels == 1 else "RGB")
            if pil.size != (side, side):
                pil = pil.resize((side, side), Image.Resampling.BILINEAR)
            loaded = Loaded(np.asarray(pil), int(array.shape[0]), int(array.shape[1]), pil.mode, digest)
            items.add(loaded, int(label), Path(f"{files[FASHION_MNIST_SPLITS[split][0]].name}[{k}]"))
        splits[split] = items
    source = {"location": str(params.path), "files": sorted(p.name for p in files.values())}
    return TaskData("idx", class_names, splits, source, side=side, channels=channels)
