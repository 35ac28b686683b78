"""Training losses/metrics against hand-computed cases, and against the Keras versions we keep ours over."""

import numpy as np
import pytest

from cnnpipe.models.losses import BoxLoss, DiceCrossentropy, box_iou_tensor, soft_dice
from cnnpipe.models.metrics import BoxIoU, DiceScore


def _np(t):
    return np.asarray(t, dtype=np.float64)


def test_box_iou_hand_cases():
    true = np.array([[0.1, 0.1, 0.4, 0.4], [0.0, 0.0, 0.2, 0.2], [0.0, 0.0, 0.5, 0.5]], "float32")
    pred = np.array([[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.2, 0.2], [0.25, 0.0, 0.5, 0.5]], "float32")
    # third pair: overlap 0.25 x 0.5 = 0.125; union 0.25 + 0.25 - 0.125 = 0.375 -> 1/3
    np.testing.assert_allclose(_np(box_iou_tensor(true, pred)), [1.0, 0.0, 1 / 3], atol=1e-5)


def test_box_iou_agrees_with_keras_but_is_not_identical():
    """Why ``box_iou_tensor`` is kept over keras.utils.bounding_boxes.compute_iou: the same
    quantity, but Keras' epsilon (1e-7 vs 1e-6) changes values, so a swap would change results."""
    import keras

    rng = np.random.default_rng(0)
    true, pred = (np.concatenate([rng.random((2000, 2)) * 0.7, 0.05 + rng.random((2000, 2)) * 0.3], 1)
                  .astype("float32") for _ in range(2))
    ours = _np(box_iou_tensor(true, pred))
    theirs = _np(keras.utils.bounding_boxes.compute_iou(true[:, None], pred[:, None], "xywh"))[:, 0, 0]
    np.testing.assert_allclose(ours, theirs, atol=1e-4)  # our geometry is right...
    assert not np.array_equal(ours, theirs)  # ...but not bit-identical: keep ours


def test_soft_dice_differs_from_keras_dice_on_empty_masks():
    """Why ``soft_dice`` is kept over keras.losses.Dice: its +1 smoothing scores empty-vs-empty 1."""
    import keras

    empty = np.zeros((1, 4, 4, 1), "float32")
    assert float(soft_dice(empty, empty)[0, 0]) == pytest.approx(1.0)
    assert float(keras.losses.Dice(reduction=None, axis=(1, 2, 3))(empty, empty)[0]) == pytest.approx(1.0)  # loss 1 = Dice 0


def test_box_loss_zero_when_exact_and_larger_when_disjoint():
    box = np.array([[0.2, 0.2, 0.3, 0.3]], "float32")
    far = np.array([[0.6, 0.6, 0.3, 0.3]], "float32")
    near = np.array([[0.21, 0.2, 0.3, 0.3]], "float32")
    loss = BoxLoss()
    exact, close, disjoint = (float(loss(box, p)) for p in (box, near, far))
    assert exact == pytest.approx(0.0, abs=1e-4)
    assert 0 < close < disjoint
    assert disjoint > 1.0  # GIoU < 0 for disjoint boxes, so 1 - GIoU > 1


def test_box_iou_metric_averages():
    metric = BoxIoU()
    metric.update_state(np.array([[0, 0, 0.5, 0.5], [0, 0, 0.2, 0.2]], "float32"),
                        np.array([[0, 0, 0.5, 0.5], [0.5, 0.5, 0.2, 0.2]], "float32"))
    assert float(metric.result()) == pytest.approx(0.5, abs=1e-5)


def test_soft_dice_cases():
    empty = np.zeros((1, 4, 4, 1), "float32")
    one = empty.copy()
    one[0, 1, 1, 0] = 1
    assert float(soft_dice(empty, empty)[0, 0]) == pytest.approx(1.0)  # empty vs empty
    assert float(soft_dice(one, one)[0, 0]) == pytest.approx(1.0)  # one pixel, exact
    assert float(soft_dice(one, empty)[0, 0]) == pytest.approx(0.5)  # (0 + 1) / (1 + 1): smoothed


def test_dice_loss_binary_and_multiclass_orders_predictions():
    true = np.zeros((1, 4, 4, 1), "float32")
    true[0, :2, :2] = 1
    good, bad = true * 0.98 + 0.01, 1 - true
    loss = DiceCrossentropy()
    assert float(loss(true, good)) < float(loss(true, bad))
    onehot = np.concatenate([1 - true, true], axis=-1)
    mloss = DiceCrossentropy(multiclass=True)
    assert float(mloss(onehot, onehot * 0.98 + 0.01)) < float(mloss(onehot, 1 - onehot))


def test_dice_score_hard_threshold():
    true = np.zeros((1, 4, 4, 1), "float32")
    true[0, :2, :2] = 1  # 4 pixels
    pred = np.zeros_like(true)
    pred[0, :2, :1] = 0.9  # 2 of them
    metric = DiceScore()
    metric.update_state(true, pred)
    # hard dice = 2*2 / (4 + 2) = 0.667, smoothed (4+1)/(6+1)
    assert float(metric.result()) == pytest.approx(5 / 7, abs=1e-5)
