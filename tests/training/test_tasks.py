"""Task helpers: mask targets, the few-label subset."""

import numpy as np
import pytest

from cnnpipe.config import ParamsError
from cnnpipe.data.prepared import Split
from cnnpipe.training.transfer import few_label_subset
from cnnpipe.training.unet import mask_targets


def _split(labels):
    n = len(labels)
    masks = np.zeros((n, 2, 2), np.uint8)
    masks[:, 0, 0] = 1
    return Split(images=np.arange(n), labels=np.asarray(labels, np.uint8), masks=masks)


def test_binary_mask_targets_keep_the_mask():
    t = mask_targets(_split([3, 1]), n_classes=4, multiclass=False)
    assert t.shape == (2, 2, 2, 1)
    assert t[:, 0, 0, 0].tolist() == [1, 1] and t.sum() == 2


def test_multiclass_mask_targets_one_hot_with_background_channel():
    t = mask_targets(_split([3, 1]), n_classes=4, multiclass=True)
    assert t.shape == (2, 2, 2, 5)
    np.testing.assert_array_equal(t.sum(-1), 1)  # one-hot everywhere
    assert t[0, 0, 0].argmax() == 4 and t[1, 0, 0].argmax() == 2  # class k -> channel k + 1
    assert t[0, 1, 1].argmax() == 0  # background


def test_few_label_subset_is_balanced_seeded_and_checked():
    split = _split([c for c in range(3) for _ in range(5)])
    a = few_label_subset(split, 2, 3, seed=0, what="train")
    b = few_label_subset(split, 2, 3, seed=0, what="train")
    np.testing.assert_array_equal(a.images, b.images)
    assert np.bincount(a.labels).tolist() == [2, 2, 2]
    with pytest.raises(ParamsError, match="has 5 examples of class 0, fewer than the label budget of 6"):
        few_label_subset(split, 6, 3, seed=0, what="train")
