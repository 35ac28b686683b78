"""IoU, Dice, pixel accuracy and classification reports against hand-computed cases."""

import numpy as np
import pytest

from cnnpipe.evaluation import scoring as m

# --------------------------------------------------------------------------------------
# Boxes
# --------------------------------------------------------------------------------------


def test_box_conversions_round_trip():
    xywh = np.array([[1.0, 2.0, 3.0, 4.0], [0.1, 0.2, 0.5, 0.25]])
    xyxy = m.xywh_to_xyxy(xywh)
    np.testing.assert_allclose(xyxy, [[1, 2, 4, 6], [0.1, 0.2, 0.6, 0.45]])
    np.testing.assert_allclose(m.xyxy_to_xywh(xyxy), xywh)
    # A single box (no batch axis) keeps its shape.
    assert m.xywh_to_xyxy(np.array([0.0, 0.0, 1.0, 1.0])).shape == (4,)


def test_box_iou_identical_is_one_and_disjoint_is_zero():
    a = np.array([[0.1, 0.2, 0.3, 0.4]])
    np.testing.assert_allclose(m.box_iou(a, a), [1.0])
    far = np.array([[0.6, 0.7, 0.2, 0.2]])
    np.testing.assert_allclose(m.box_iou(a, far), [0.0])
    # Sharing only an edge is no overlap: a spans x in [0.1, 0.4], this one [0.4, 0.6].
    touching = np.array([[0.4, 0.2, 0.2, 0.4]])
    np.testing.assert_allclose(m.box_iou(a, touching), [0.0])


def test_box_iou_known_partial_overlaps():
    a = np.array([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 4.0, 4.0]])
    b = np.array([[1.0, 1.0, 2.0, 2.0], [0.25, 0.0, 0.5, 0.5], [1.0, 1.0, 2.0, 2.0]])
    # Row 0: the overlap is the unit square [1,2]x[1,2]: inter 1, union 4 + 4 - 1 = 7 -> 1/7.
    # Row 1: overlap x in [0.25, 0.5], y in [0, 0.5]: inter 0.125, union 0.25+0.25-0.125=0.375 -> 1/3.
    # Row 2: b lies inside a: inter = area(b) = 4, union = area(a) = 16 -> 1/4.
    np.testing.assert_allclose(m.box_iou(a, b), [1 / 7, 1 / 3, 1 / 4])
    # IoU is symmetric.
    np.testing.assert_allclose(m.box_iou(b, a), [1 / 7, 1 / 3, 1 / 4])


def test_box_iou_zero_area_and_negative_sides_score_zero():
    point = np.array([[0.5, 0.5, 0.0, 0.0]])
    big = np.array([[0.0, 0.0, 1.0, 1.0]])
    np.testing.assert_allclose(m.box_iou(point, point), [0.0])  # union has no area
    np.testing.assert_allclose(m.box_iou(point, big), [0.0])  # inside, but covers nothing
    line = np.array([[0.0, 0.5, 1.0, 0.0]])
    np.testing.assert_allclose(m.box_iou(line, big), [0.0])
    # A negative width is an empty box, not a mirrored one.
    flipped = np.array([[1.0, 0.0, -1.0, 1.0]])
    np.testing.assert_allclose(m.box_iou(flipped, big), [0.0])


def test_box_iou_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="box_iou"):
        m.box_iou(np.zeros((2, 4)), np.zeros((3, 4)))


# --------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------


def test_empty_masks_convention():
    empty = np.zeros((1, 3, 3), np.uint8)
    one = empty.copy()
    one[0, 1, 1] = 1
    # Both empty: nothing to find and nothing found -> 1.0.
    assert m.mask_dice(empty, empty)[0] == 1.0
    assert m.mask_iou(empty, empty)[0] == 1.0
    # Exactly one empty -> 0.0, whichever side.
    for pred, true in ((empty, one), (one, empty)):
        assert m.mask_dice(pred, true)[0] == 0.0
        assert m.mask_iou(pred, true)[0] == 0.0


def test_one_pixel_masks():
    a = np.zeros((2, 4, 4), np.uint8)
    b = np.zeros((2, 4, 4), np.uint8)
    a[0, 2, 3] = b[0, 2, 3] = 1  # image 0: the same pixel
    a[1, 0, 0] = b[1, 3, 3] = 1  # image 1: different pixels
    np.testing.assert_allclose(m.mask_dice(a, b), [1.0, 0.0])
    np.testing.assert_allclose(m.mask_iou(a, b), [1.0, 0.0])
    # Image 0 agrees everywhere; image 1 disagrees at exactly 2 of 16 pixels.
    np.testing.assert_allclose(m.pixel_accuracy(a, b), [1.0, 14 / 16])


def test_partial_mask_overlap_and_pixel_accuracy():
    pred = np.array([[[1, 1], [0, 0]]])
    true = np.array([[[0, 1], [1, 1]]])
    # |P| = 2, |T| = 3, |P∩T| = 1 (top right): Dice 2*1/5 = 0.4, IoU 1/(2+3-1) = 0.25.
    np.testing.assert_allclose(m.mask_dice(pred, true), [0.4])
    np.testing.assert_allclose(m.mask_iou(pred, true), [0.25])
    # Only the top-right pixel agrees: 1 of 4.
    np.testing.assert_allclose(m.pixel_accuracy(pred, true), [0.25])
    # Any nonzero value is foreground (e.g. a multiclass label map).
    np.testing.assert_allclose(m.mask_dice(pred * 7, true * 3), [0.4])


def test_per_class_dice_iou_with_background():
    pred = np.array([[[0, 1], [2, 2]]])
    true = np.array([[[0, 1], [1, 2]]])
    got = m.per_class_dice_iou(pred, true, n_classes=4)
    # class 0 (background): 1 pixel in both, same place -> 1, 1.
    assert got[0] == {"dice": 1.0, "iou": 1.0}
    # class 1: pred 1 px, true 2 px, 1 shared -> Dice 2/3, IoU 1/2.
    assert got[1]["dice"] == pytest.approx(2 / 3) and got[1]["iou"] == pytest.approx(0.5)
    # class 2: pred 2 px, true 1 px, 1 shared -> Dice 2/3, IoU 1/2.
    assert got[2]["dice"] == pytest.approx(2 / 3) and got[2]["iou"] == pytest.approx(0.5)
    # class 3: absent on both sides -> 1.0 by the both-empty convention.
    assert got[3] == {"dice": 1.0, "iou": 1.0}


def test_per_class_pools_over_the_whole_set_not_per_image():
    # Image 0 has 3 pixels of class 1 found exactly; image 1 has 1 pixel of class 1, missed.
    pred = np.array([[1, 1, 1, 0], [0, 0, 0, 0]])
    true = np.array([[1, 1, 1, 0], [1, 0, 0, 0]])
    got = m.per_class_dice_iou(pred, true, 2)
    # Pooled: inter 3, |P| 3, |T| 4 -> Dice 6/7 (a per-image mean would give (1 + 0)/2).
    assert got[1]["dice"] == pytest.approx(6 / 7)
    assert got[1]["iou"] == pytest.approx(3 / 4)


def test_mask_shape_mismatch_and_bad_labels_raise():
    with pytest.raises(ValueError):
        m.mask_dice(np.zeros((1, 2, 2)), np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match="labels must lie"):
        m.per_class_dice_iou(np.array([[0, 3]]), np.array([[0, 1]]), 3)


# --------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------


def test_confusion_matrix_rows_true_columns_pred():
    cm = m.confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 0]), 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [1, 0, 0]])
    with pytest.raises(ValueError, match="y_pred"):
        m.confusion_matrix(np.array([0]), np.array([5]), 3)


def test_classification_report_hand_case():
    y_true = np.array([0, 0, 1, 2])
    y_pred = np.array([0, 1, 1, 0])
    rep = m.classification_report(y_true, y_pred, ["a", "b", "c", "d"])
    assert rep["accuracy"] == pytest.approx(0.5)  # 2 of 4 right
    pc = rep["per_class"]
    # a: predicted twice (1 right), 2 true (1 found) -> P 1/2, R 1/2, F1 1/2.
    assert pc["a"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    # b: predicted twice (1 right), 1 true (found) -> P 1/2, R 1, F1 2*(1/2)/(3/2) = 2/3.
    assert pc["b"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    # c: never predicted (0/0 -> 0), its one example missed -> all 0.
    assert pc["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    # d: no examples and no predictions -> zero division everywhere -> 0.
    assert pc["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert rep["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0 + 0) / 4)
    assert isinstance(pc["a"]["support"], int)


def test_classification_report_perfect_and_empty():
    y = np.array([0, 1, 1])
    rep = m.classification_report(y, y, ["x", "y"])
    assert rep["accuracy"] == 1.0 and rep["macro_f1"] == 1.0
    empty = m.classification_report(np.array([], int), np.array([], int), ["x"])
    assert empty["accuracy"] == 0.0 and empty["per_class"]["x"]["support"] == 0


def test_the_confusion_matrix_and_report_agree_with_sklearn_on_random_labels():
    """Kept hand-written (a bincount and ~10 lines of ratios): sklearn's matrix and precision,
    recall and support are identical, incl. classes absent from the predictions or the truth;
    its F1 is 2tp / (2tp + fp + fn), which differs from 2PR / (P + R) in the last bit, so
    replacing it would change metrics/*.json; and sklearn refuses an empty test set."""
    import warnings

    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 8))
        size = int(rng.integers(1, 60))
        y_true = rng.integers(0, n, size)
        y_pred = rng.integers(0, max(1, n - int(rng.integers(0, 3))), size)  # some classes never predicted
        labels = list(range(n))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn warns about a single label; labels= is given
            expected_cm = confusion_matrix(y_true, y_pred, labels=labels)
            precision, recall, f1, support = precision_recall_fscore_support(
                y_true, y_pred, labels=labels, zero_division=0.0)
        np.testing.assert_array_equal(m.confusion_matrix(y_true, y_pred, n), expected_cm)
        report = m.classification_report(y_true, y_pred, [str(k) for k in labels])
        rows = [report["per_class"][str(k)] for k in labels]
        np.testing.assert_array_equal([r["precision"] for r in rows], precision)
        np.testing.assert_array_equal([r["recall"] for r in rows], recall)
        np.testing.assert_array_equal([r["support"] for r in rows], support)
        np.testing.assert_allclose([r["f1"] for r in rows], f1, rtol=0, atol=1e-15)
        assert report["accuracy"] == float(np.mean(y_true == y_pred))
