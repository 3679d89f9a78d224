"""The measurements of ``lipxai reproduce``'s experiments against hand computations."""

import numpy as np
import pytest

from lipxai.apps.reproduce import measures


def test_mean_std_over_seeds_ignores_non_finite_values():
    s = measures.mean_std([1.0, 3.0, float("nan")])
    assert s == dict(mean=2.0, std=pytest.approx(np.sqrt(2.0)), n=2)   # std of (1, 3), ddof=1
    assert measures.mean_std([0.5]) == dict(mean=0.5, std=0.0, n=1)
    assert measures.mean_std([float("nan")])["n"] == 0


def test_cosine_by_hand_and_nan_for_an_all_zero_map():
    a = np.array([[[1.0, 0.0]], [[1.0, 1.0]], [[0.0, 0.0]]])
    b = np.array([[[0.0, 2.0]], [[2.0, 2.0]], [[1.0, 0.0]]])
    out = measures.cosine(a, b)
    assert out[0] == 0.0 and out[1] == pytest.approx(1.0) and np.isnan(out[2])
    assert measures.cosine(a[:2], -a[:2]) == pytest.approx([-1.0, -1.0])
    with pytest.raises(ValueError, match="same shape"):
        measures.cosine(a, b[:, :, :1])


def test_mean_pairwise_cosine_averages_the_three_pairs():
    # e1, e1, e2: pairs (e1, e1) = 1, (e1, e2) = 0 twice -> 1/3
    e1, e2 = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    assert measures.mean_pairwise_cosine([e1, e1, e2]) == pytest.approx([1 / 3])
    assert measures.mean_pairwise_cosine([e1, 3 * e1]) == pytest.approx([1.0])
    with pytest.raises(ValueError, match="at least two"):
        measures.mean_pairwise_cosine([e1])


def test_digit_mask_marks_pixels_above_zero_in_any_channel():
    x = np.zeros((1, 2, 2, 2))
    x[0, 0, 1, 1] = 0.3
    assert measures.digit_mask(x).tolist() == [[[False, True], [False, False]]]


def test_distance_ratio_by_hand_and_nan_where_undefined():
    # a transport step of 1.1 times the exact distance 2 gives 1.1; no flip, no boundary point,
    # or a point already across the boundary (distance 0) leave the ratio undefined
    ratio = measures.distance_ratio(distances=[2.2, 1.0, 1.0, 1.0, 0.5],
                                    flipped=[True, False, True, True, True],
                                    closest=[2.0, 1.0, 1.0, 0.0, 1.0],
                                    found=[True, True, False, True, True])
    assert ratio[0] == pytest.approx(1.1) and ratio[4] == pytest.approx(0.5)
    assert np.isnan(ratio[1:4]).all()
