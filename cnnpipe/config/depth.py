"""How deep a network the data's image side allows: checked where the side is known (the
training code, before it builds a model), so a ``filters`` list too long for the images is one
line naming both keys instead of a Keras shape error.

Each max-pooling halves the side (rounding down); a side below 1 px cannot be pooled again.
The U-Net also concatenates each decoder level with its encoder twin, so its side must divide
exactly by 2 at every level.
"""

from __future__ import annotations

from collections.abc import Sequence

from cnnpipe.config.base import ParamsError

# The keys that set a prepared set's side, named in the messages (built-in Fashion-MNIST is 28 px).
SIDE_KEYS = {
    "classification": "datasets.classification.image_size",
    "localization": "datasets.localization.image_size, or prepare.scenes.canvas for the scenes",
    "segmentation": "datasets.segmentation.image_size, or prepare.scenes.canvas for the scenes",
}


def _halvings(side: int, exact: bool) -> int:
    """How many times ``side`` can be halved and stay >= 1 px (``exact``: and stay whole)."""
    n = 0
    while side >= 2 and (side % 2 == 0 or not exact):
        side //= 2
        n += 1
    return n


def check_backbone_depth(
    filters: Sequence[int], side: int, dataset: str, *, extra_pool: bool = False, key: str = "train_classifier.filters"
) -> None:
    """Raise :class:`ParamsError` unless the backbone's ``len(filters)`` blocks (a pooling
    between blocks, and one more before a dense head: ``extra_pool``) fit ``side`` px images."""
    pools = len(filters) - 1 + int(extra_pool)
    if side >= 2**pools:
        return
    deepest = _halvings(side, exact=False) + 1 - int(extra_pool)
    head = " and the one before the dense head" if extra_pool else ""
    raise ParamsError(
        f"{key}: {len(filters)} blocks pool {pools} times (between blocks{head}), which needs images of "
        f"at least {2**pools} px; the {dataset} images are {side} px, where at most {max(deepest, 0)} "
        f"blocks fit; use fewer filters or larger images ({SIDE_KEYS[dataset]})"
    )


def check_unet_depth(filters: Sequence[int], side: int, key: str = "train_unet.filters") -> None:
    """Raise :class:`ParamsError` unless ``side`` divides by 2 at each of the U-Net's
    ``len(filters) - 1`` poolings (its skip connections join equal sides only)."""
    pools = len(filters) - 1
    if side % 2**pools == 0:
        return
    deepest = _halvings(side, exact=True) + 1
    raise ParamsError(
        f"{key}: {len(filters)} levels need an image side divisible by {2**pools} (2^{pools}); the "
        f"segmentation images are {side} px, where at most {deepest} level{'s' if deepest > 1 else ''} fit; "
        f"use fewer filters or a side divisible by {2**pools} ({SIDE_KEYS['segmentation']})"
    )
