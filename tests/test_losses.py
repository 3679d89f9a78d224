"""Tests for lipxai.losses: hand-computed values, loop references, peers, properties, errors."""

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lipxai import losses

LN3 = math.log(3.0)

BINARY = {
    "kr": losses.kr,
    "hinge_margin": partial(losses.hinge_margin, min_margin=0.8),
    "hkr": partial(losses.hkr, alpha=0.7, min_margin=1.5),
}
MULTICLASS = {
    "multiclass_kr": losses.multiclass_kr,
    "multiclass_hinge": partial(losses.multiclass_hinge, min_margin=0.6),
    "multiclass_hkr": partial(losses.multiclass_hkr, alpha=0.3, min_margin=1.2),
    "soft_hkr": partial(losses.soft_hkr, alpha=0.6, min_margin=0.9, temperature=2.0),
    "tau_cross_entropy": partial(losses.tau_cross_entropy, tau=3.0),
}
ALL = {**BINARY, **MULTICLASS}


def close(actual, expected, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=rtol, atol=atol)


# ---------------------------------------------------------------- hand-computed values

BIN_F = np.array([2.0, -0.5, 0.25, -1.0], np.float32)
BIN_Y = np.array([1, 1, 0, 0], np.int32)


def test_kr_by_hand():
    # class 1: (2 - 0.5) / 2 = 0.75 ; class 0: (0.25 - 1) / 2 = -0.375 ; -(0.75 + 0.375)
    close(losses.kr(BIN_F, BIN_Y), -1.125)


def test_kr_by_hand_one_class_absent():
    # only class 0: its mean is (1 + 3) / 2 = 2, the absent class counts 0: -(0 - 2) = 2
    close(losses.kr(np.array([1.0, 3.0], np.float32), np.array([0, 0])), 2.0)
    # only class 1: -(2 - 0) = -2
    close(losses.kr(np.array([1.0, 3.0], np.float32), np.array([1, 1])), -2.0)


def test_hinge_margin_by_hand():
    # m = 1, y = (+1, +1, -1, -1): relu(.5 - 2) + relu(.5 + .5) + relu(.5 + .25) + relu(.5 - 1)
    #                             = 0 + 1 + 0.75 + 0 = 1.75 ; / 4
    close(losses.hinge_margin(BIN_F, BIN_Y), 0.4375)
    # m = 2: relu(1 - 2) + relu(1 + .5) + relu(1 + .25) + relu(1 - 1) = 2.75 ; / 4
    close(losses.hinge_margin(BIN_F[:, None], BIN_Y, min_margin=2.0), 0.6875)


def test_hkr_by_hand():
    # 0.75 * hinge + 0.25 * kr = 0.75 * 0.4375 + 0.25 * (-1.125) = 0.328125 - 0.28125
    close(losses.hkr(BIN_F[:, None], BIN_Y, alpha=0.75), 0.046875)


MC_F = np.array([[1.0, -0.5, 0.0], [0.2, 0.4, -1.0], [0.5, -0.3, -0.2]], np.float32)
MC_Y = np.array([0, 1, 2], np.int32)


def test_multiclass_kr_by_hand():
    # class 0: 1.0 - (0.2 + 0.5) / 2 = 0.65
    # class 1: 0.4 - (-0.5 - 0.3) / 2 = 0.8
    # class 2: -0.2 - (0.0 - 1.0) / 2 = 0.3      -> -(0.65 + 0.8 + 0.3) / 3 = -1.75 / 3
    close(losses.multiclass_kr(MC_F, MC_Y), -1.75 / 3)


def test_multiclass_kr_by_hand_classes_absent():
    # labels (0, 0) over 3 classes: class 0 gap (1 - 1) / 2 - 0 = 0,
    # class 1: 0 - (2 + 0) / 2 = -1, class 2: 0 - (3 + 1) / 2 = -2  -> -(0 - 1 - 2) / 3 = 1
    logits = np.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 1.0]], np.float32)
    close(losses.multiclass_kr(logits, np.array([0, 0])), 1.0)


def test_multiclass_hinge_by_hand():
    # m = 1, per example (C - 1) relu(.5 - f_y) + sum_{c != y} relu(.5 + f_c), then / C:
    # ex 0: 2 * relu(.5 - 1)  + relu(.5 - .5) + relu(.5 + 0)  = 0 + 0 + 0.5     = 0.5
    # ex 1: 2 * relu(.5 - .4) + relu(.5 + .2) + relu(.5 - 1)  = 0.2 + 0.7 + 0   = 0.9
    # ex 2: 2 * relu(.5 + .2) + relu(.5 + .5) + relu(.5 - .3) = 1.4 + 1.0 + 0.2 = 2.6
    # mean over 3 examples of (. / 3) = (0.5 + 0.9 + 2.6) / 9 = 4 / 9
    close(losses.multiclass_hinge(MC_F, MC_Y), 4.0 / 9)


def test_multiclass_hkr_by_hand():
    # 0.5 * 4/9 + 0.5 * (-1.75/3) = 2/9 - 7/24 = (16 - 21) / 72
    close(losses.multiclass_hkr(MC_F, MC_Y, alpha=0.5), -5.0 / 72)


def test_soft_hkr_by_hand():
    # alpha = .5, m = 1; mean|f| = (1 + 0 + 0 + 0 + 1 + ln3) / 6 < 1 so t = temperature = 1.
    # ex 0 (y=0, f=(1, 0, 0)): other weights 1/2, 1/2
    #   true: .5 * (-1) + .5 * relu(.5 - 1) = -0.5 ; others: .5 * 0 + .5 * relu(.5 + 0) = .25
    #   total -0.5 + 0.25 = -0.25
    # ex 1 (y=1, f=(0, -1, ln3)): other weights e^0 / (1 + 3) = 1/4 and 3/4
    #   true: .5 * 1 + .5 * relu(.5 + 1) = 1.25
    #   c=0: .5 * 0 + .5 * .5 = .25, times 1/4 = 0.0625
    #   c=2: .5 ln3 + .5 (.5 + ln3) = .25 + ln3, times 3/4 = 0.1875 + 0.75 ln3
    #   total 1.5 + 0.75 ln3
    # mean: (1.25 + 0.75 ln3) / 2
    logits = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, LN3]], np.float32)
    close(losses.soft_hkr(logits, np.array([0, 1]), alpha=0.5), 0.625 + 0.375 * LN3)


def test_soft_hkr_by_hand_batch_temperature():
    # f = (2 (3 - ln3), 0, 2 ln3), y = 0: mean|f| = (6 - 2 ln3 + 2 ln3) / 3 = 2 > m = 1,
    # so t = 1 * 1 / 2 and the other weights are e^0 : e^ln3 = 1/4 : 3/4.
    # alpha = 1 (hinge only): relu(.5 - f_0) = 0 ; 1/4 * relu(.5 + 0) + 3/4 * relu(.5 + 2 ln3)
    #   = 0.125 + 0.375 + 1.5 ln3 = 0.5 + 1.5 ln3   (with t = 1 it would be 0.5 + 1.8 ln3)
    logits = np.array([[2 * (3 - LN3), 0.0, 2 * LN3]], np.float32)
    close(losses.soft_hkr(logits, np.array([0]), alpha=1.0), 0.5 + 1.5 * LN3)


def test_tau_cross_entropy_by_hand():
    # tau = 2. ex 0: tau f = (ln3, 0), y=0: log(3 + 1) - ln3 = ln(4/3)
    #          ex 1: tau f = (0, 0),   y=1: log(2)
    # mean / tau = (ln(4/3) + ln 2) / 4 = ln(8/3) / 4
    logits = np.array([[LN3 / 2, 0.0], [0.0, 0.0]], np.float32)
    close(losses.tau_cross_entropy(logits, np.array([0, 1]), tau=2.0), math.log(8 / 3) / 4)


# ---------------------------------------------------------------- loop references (numpy)


def ref_kr(f, y):
    ones = [v for v, lab in zip(f, y, strict=False) if lab == 1]
    zeros = [v for v, lab in zip(f, y, strict=False) if lab == 0]
    mean_one = sum(ones) / len(ones) if ones else 0.0
    mean_zero = sum(zeros) / len(zeros) if zeros else 0.0
    return mean_zero - mean_one


def ref_hinge_margin(f, y, min_margin=1.0):
    total = 0.0
    for v, lab in zip(f, y, strict=False):
        margin = v if lab == 1 else -v
        total += max(0.0, min_margin / 2 - margin)
    return total / len(f)


def ref_hkr(f, y, alpha=0.9, min_margin=1.0):
    return alpha * ref_hinge_margin(f, y, min_margin) + (1 - alpha) * ref_kr(f, y)


def ref_multiclass_kr(f, y):
    batch, num_classes = f.shape
    gaps = 0.0
    for c in range(num_classes):
        column = [(f[i, c], y[i] == c) for i in range(batch)]
        own = [v for v, is_c in column if is_c]
        rest = [v for v, is_c in column if not is_c]
        gaps += (sum(own) / len(own) if own else 0.0) - (sum(rest) / len(rest) if rest else 0.0)
    return -gaps / num_classes


def ref_multiclass_hinge(f, y, min_margin=1.0):
    # deel-lip's other spelling: sum_{c != y} [relu(m/2 - f_y) + relu(m/2 + f_c)] / C
    batch, num_classes = f.shape
    total = 0.0
    for i in range(batch):
        for c in range(num_classes):
            if c != y[i]:
                total += max(0.0, min_margin / 2 - f[i, y[i]]) + max(0.0, min_margin / 2 + f[i, c])
    return total / (batch * num_classes)


def ref_multiclass_hkr(f, y, alpha=0.9, min_margin=1.0):
    return alpha * ref_multiclass_hinge(f, y, min_margin) + (1 - alpha) * ref_multiclass_kr(f, y)


def ref_soft_hkr(f, y, alpha=0.9, min_margin=1.0, temperature=1.0):
    batch, num_classes = f.shape
    mean_abs = min(max(np.abs(f).mean(), min_margin), 2e4)
    t = min(max(temperature * min_margin / mean_abs, 0.005), 250.0)
    total = 0.0
    for i in range(batch):
        true = f[i, y[i]]
        total += (1 - alpha) * -true + alpha * max(0.0, min_margin / 2 - true)
        others = [f[i, c] for c in range(num_classes) if c != y[i]]
        top = max(others)
        exps = [math.exp(t * (v - top)) for v in others]
        for v, e in zip(others, exps, strict=False):
            total += e / sum(exps) * ((1 - alpha) * v + alpha * max(0.0, min_margin / 2 + v))
    return total / batch


def ref_tau_cross_entropy(f, y, tau):
    total = 0.0
    for i in range(f.shape[0]):
        z = [tau * v for v in f[i]]
        top = max(z)
        log_sum = top + math.log(sum(math.exp(v - top) for v in z))
        total += (log_sum - z[y[i]]) / tau
    return total / f.shape[0]


REFERENCES = {
    "kr": ref_kr,
    "hinge_margin": partial(ref_hinge_margin, min_margin=0.8),
    "hkr": partial(ref_hkr, alpha=0.7, min_margin=1.5),
    "multiclass_kr": ref_multiclass_kr,
    "multiclass_hinge": partial(ref_multiclass_hinge, min_margin=0.6),
    "multiclass_hkr": partial(ref_multiclass_hkr, alpha=0.3, min_margin=1.2),
    "soft_hkr": partial(ref_soft_hkr, alpha=0.6, min_margin=0.9, temperature=2.0),
    "tau_cross_entropy": partial(ref_tau_cross_entropy, tau=3.0),
}


def random_batch(name, seed):
    """Random logits (small or large scale, so soft_hkr's clip is hit both ways) and labels."""
    rng = np.random.default_rng(seed)
    batch = int(rng.integers(1, 10))
    scale = (0.3, 3.0)[seed % 2]
    if name in BINARY:
        return (scale * rng.normal(size=batch)).astype(np.float32), rng.integers(0, 2, batch)
    num_classes = int(rng.integers(2, 6))
    logits = (scale * rng.normal(size=(batch, num_classes))).astype(np.float32)
    return logits, rng.integers(0, num_classes, batch)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("name", sorted(ALL))
def test_matches_loop_reference(name, seed):
    logits, labels = random_batch(name, seed)
    expected = REFERENCES[name](logits.astype(np.float64), labels)
    close(ALL[name](logits, labels), expected)


# ---------------------------------------------------------------- deel-torchlip


@pytest.mark.peers
def test_matches_deel_torchlip():
    torch = pytest.importorskip("torch")
    tl = pytest.importorskip("deel.torchlip")

    def binary(loss, logits, labels):
        target = torch.tensor(labels[:, None], dtype=torch.float32)
        return float(loss(torch.tensor(logits[:, None]), target))

    def multiclass(loss, logits, labels):
        target = torch.nn.functional.one_hot(torch.tensor(labels), logits.shape[1]).float()
        return float(loss(torch.tensor(logits), target))

    for seed in range(6):
        rng = np.random.default_rng(seed)
        scale = (0.3, 3.0)[seed % 2]
        f = (scale * rng.normal(size=8)).astype(np.float32)
        y = rng.integers(0, 2, 8) if seed else np.zeros(8, np.int64)
        close(losses.kr(f, y), binary(tl.NegKRLoss(), f, y))
        close(losses.hinge_margin(f, y, min_margin=0.8), binary(tl.HingeMarginLoss(0.8), f, y))
        close(losses.hkr(f, y, alpha=0.7, min_margin=1.5), binary(tl.HKRLoss(0.7, 1.5), f, y))

        f = (scale * rng.normal(size=(8, 4))).astype(np.float32)
        y = rng.integers(0, 4, 8)
        close(losses.multiclass_kr(f, y), -multiclass(tl.KRMulticlassLoss(), f, y))
        close(
            losses.multiclass_hinge(f, y, min_margin=0.6),
            multiclass(tl.HingeMulticlassLoss(0.6), f, y),
        )
        close(
            losses.multiclass_hkr(f, y, alpha=0.3, min_margin=1.2),
            multiclass(tl.HKRMulticlassLoss(0.3, 1.2), f, y),
        )
        soft = tl.SoftHKRMulticlassLoss(alpha=0.6, min_margin=0.9, alpha_mean=0.0, temperature=2.0)
        close(
            losses.soft_hkr(f, y, alpha=0.6, min_margin=0.9, temperature=2.0),
            multiclass(soft, f, y),
        )
        torch_ce = float(tl.TauCrossEntropyLoss(3.0)(torch.tensor(f), torch.tensor(y)))
        close(losses.tau_cross_entropy(f, y, tau=3.0), torch_ce)


# ---------------------------------------------------------------- properties


@settings(max_examples=30, deadline=None)
@given(
    margins=st.lists(st.floats(0.0, 5.0), min_size=1, max_size=6),
    labels=st.lists(st.integers(0, 1), min_size=6, max_size=6),
    min_margin=st.floats(0.1, 3.0),
)
def test_hinge_zero_beyond_margin(margins, labels, min_margin):
    y = np.array(labels[: len(margins)])
    sign = np.where(y == 1, 1.0, -1.0)
    logits = (sign * (min_margin / 2 + np.array(margins))).astype(np.float32)
    assert float(losses.hinge_margin(logits, y, min_margin=min_margin)) == 0.0


def test_multiclass_hinge_zero_beyond_margin():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 7)
    logits = -0.5 - rng.uniform(0, 2, (7, 4))  # every wrong class below -m/2 = -0.5
    logits[np.arange(7), labels] = 0.5 + rng.uniform(0, 2, 7)  # true class above m/2
    assert float(losses.multiclass_hinge(logits.astype(np.float32), labels)) == 0.0


def test_kr_is_minus_mean_gap_and_shift_invariant():
    rng = np.random.default_rng(1)
    f = rng.normal(size=10).astype(np.float32)
    y = np.array([0, 1] * 5)
    gap = f[y == 1].mean() - f[y == 0].mean()
    close(losses.kr(f, y), -gap)
    close(losses.kr(f + 7.0, y), -gap, atol=1e-5)
    close(losses.multiclass_kr(np.stack([-f, f], 1), y), -gap)


def test_hkr_endpoints():
    f, y = random_batch("hkr", 3)
    close(losses.hkr(f, y, alpha=0.0), losses.kr(f, y))
    close(losses.hkr(f, y, alpha=1.0, min_margin=2.0), losses.hinge_margin(f, y, min_margin=2.0))
    f, y = random_batch("multiclass_hkr", 3)
    close(losses.multiclass_hkr(f, y, alpha=0.0), losses.multiclass_kr(f, y))
    close(losses.multiclass_hkr(f, y, alpha=1.0), losses.multiclass_hinge(f, y))


def test_soft_hkr_sharp_softmax_picks_strongest_other_class():
    # temperature 1e6 clips t at 250: the weight goes to the highest wrong logit.
    rng = np.random.default_rng(2)
    f = rng.permuted(np.tile(np.linspace(-1.0, 1.0, 5), (6, 1)), axis=1).astype(np.float32)
    y = rng.integers(0, 5, 6)
    true = f[np.arange(6), y]
    best_other = np.where(np.arange(5) == y[:, None], -np.inf, f).max(axis=1)
    expected = np.mean(np.maximum(0.5 - true, 0) + np.maximum(0.5 + best_other, 0))
    close(losses.soft_hkr(f, y, alpha=1.0, temperature=1e6), expected)


def test_soft_hkr_two_classes_is_pairwise():
    # with C = 2 the only other class has weight 1 whatever the temperature
    f, y = random_batch("soft_hkr", 5)
    f = f[:, :2]
    y = y % 2
    true, other = f[np.arange(len(y)), y], f[np.arange(len(y)), 1 - y]
    a = 0.4
    expected = np.mean(
        (1 - a) * (other - true) + a * (np.maximum(0.5 - true, 0) + np.maximum(0.5 + other, 0))
    )
    close(losses.soft_hkr(f, y, alpha=a, temperature=0.01), expected)


@pytest.mark.parametrize("tau", [0.5, 4.0, 64.0, 1024.0])
def test_tau_cross_entropy_approaches_margin_hinge(tau):
    # max_{c != y} f_c - f_y, floored at 0, is a lower bound; the gap is at most log(C) / tau.
    rng = np.random.default_rng(3)
    f = rng.normal(size=(9, 5)).astype(np.float32)
    y = rng.integers(0, 5, 9)
    others = np.where(np.arange(5) == y[:, None], -np.inf, f).max(axis=1)
    floor = np.mean(np.maximum(others - f[np.arange(9), y], 0))
    value = float(losses.tau_cross_entropy(f, y, tau=tau))
    assert floor - 1e-5 <= value <= floor + math.log(5) / tau + 1e-5


def test_tau_cross_entropy_matches_optax_at_tau_one():
    f, y = random_batch("tau_cross_entropy", 4)
    expected = optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(f), jnp.asarray(y))
    close(losses.tau_cross_entropy(f, y, tau=1.0), jnp.mean(expected))


@pytest.mark.parametrize("name", sorted(ALL))
def test_gradients_finite(name):
    logits, labels = random_batch(name, 7)
    one_class = np.zeros_like(labels)
    for f, y in [(logits, labels), (logits, one_class), (300.0 * logits, labels)]:
        grad = jax.grad(ALL[name])(jnp.asarray(f), jnp.asarray(y))
        assert grad.shape == f.shape
        assert np.all(np.isfinite(grad)), name
        assert np.isfinite(float(ALL[name](f, y)))


@pytest.mark.parametrize("name", sorted(ALL))
def test_jit_matches_eager(name):
    logits, labels = random_batch(name, 8)
    close(jax.jit(ALL[name])(logits, labels), ALL[name](logits, labels), rtol=1e-6)


@pytest.mark.parametrize("name", sorted(ALL))
def test_scalar_float32_output(name):
    logits, labels = random_batch(name, 9)
    value = ALL[name](jnp.asarray(logits, jnp.bfloat16), labels)
    assert value.shape == () and value.dtype == jnp.float32


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_accepts_b_and_b1(name):
    logits, labels = random_batch(name, 10)
    close(BINARY[name](logits[:, None], labels), BINARY[name](logits, labels), rtol=0)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", sorted(ALL))
def test_bad_inputs(name):
    loss = ALL[name]
    logits, labels = random_batch(name, 11)
    wrong_rank = logits[:, None, None] if name in BINARY else logits[:, 0]
    with pytest.raises(ValueError, match="logits"):
        loss(wrong_rank, labels)
    with pytest.raises(TypeError, match="logits"):
        loss(np.ones(logits.shape, np.int32), labels)
    with pytest.raises(TypeError, match="labels"):
        loss(logits, labels.astype(np.float32))
    with pytest.raises(ValueError, match="labels"):
        loss(logits, labels[:, None])
    num_classes = 2 if name in BINARY else logits.shape[1]
    with pytest.raises(ValueError, match="labels"):
        loss(logits, np.full_like(labels, num_classes))
    with pytest.raises(ValueError, match="labels"):
        loss(logits, np.full_like(labels, -1))
    with pytest.raises(ValueError, match="logits"):
        loss(logits[:0], labels[:0])


def test_binary_rejects_several_scores():
    with pytest.raises(ValueError, match=r"logits must have shape \[B\] or \[B, 1\]"):
        losses.kr(np.zeros((3, 2), np.float32), np.array([0, 1, 0]))


def test_multiclass_rejects_single_class():
    with pytest.raises(ValueError, match="C >= 2"):
        losses.multiclass_kr(np.zeros((3, 1), np.float32), np.array([0, 0, 0]))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda f, y: losses.hkr(f[:, 0], y % 2, alpha=-0.1), "alpha must be a finite number >= 0"),
        (
            lambda f, y: losses.hkr(f[:, 0], y % 2, alpha=10.0),
            r"alpha must be a number in \[0, 1\]",
        ),
        (lambda f, y: losses.multiclass_hkr(f, y, alpha=-1.0), "alpha"),
        (lambda f, y: losses.soft_hkr(f, y, alpha=1.5), "alpha"),
        (lambda f, y: losses.hinge_margin(f[:, 0], y % 2, min_margin=0.0), "min_margin"),
        (lambda f, y: losses.hkr(f[:, 0], y % 2, min_margin=-1.0), "min_margin"),
        (lambda f, y: losses.multiclass_hinge(f, y, min_margin=-1.0), "min_margin"),
        (lambda f, y: losses.soft_hkr(f, y, min_margin=0.0), "min_margin"),
        (lambda f, y: losses.soft_hkr(f, y, temperature=0.0), "temperature"),
        (lambda f, y: losses.tau_cross_entropy(f, y, tau=0.0), "tau"),
        (lambda f, y: losses.tau_cross_entropy(f, y, tau=-2.0), "tau"),
    ],
)
def test_bad_hyperparameters(call, match):
    f, y = random_batch("soft_hkr", 12)
    with pytest.raises(ValueError, match=match):
        call(f, y)


# margin_eikonal: a regulariser of the model's input gradients (model function, not logits)


def linear_model(w):
    return lambda x: x.reshape(x.shape[0], -1) @ w


def test_margin_eikonal_of_a_linear_model_by_hand():
    w = jax.random.normal(jax.random.PRNGKey(0), (12, 4))
    x = jax.random.normal(jax.random.PRNGKey(1), (6, 3, 4))
    labels = jnp.array([0, 1, 2, 3, 0, 2])
    logits = np.asarray(linear_model(w)(x))
    w = np.asarray(w)
    expected = []
    for b, y in enumerate(np.asarray(labels)):
        runner_up = max((j for j in range(4) if j != y), key=lambda j: logits[b, j])
        expected.append((np.linalg.norm(w[:, y] - w[:, runner_up]) - 0.7) ** 2)
    got = losses.margin_eikonal(linear_model(jnp.asarray(w)), x, labels, target=0.7)
    np.testing.assert_allclose(got, np.mean(expected), rtol=1e-5)


def test_margin_eikonal_vanishes_when_every_margin_gradient_has_the_target_norm():
    q, _ = np.linalg.qr(np.asarray(jax.random.normal(jax.random.PRNGKey(2), (10, 5))))
    w = jnp.asarray(q / np.sqrt(2.0))        # orthonormal columns / sqrt 2: ||w_y - w_j|| = 1
    x = jax.random.normal(jax.random.PRNGKey(3), (8, 10))
    labels = jnp.arange(8) % 5
    assert float(losses.margin_eikonal(linear_model(w), x, labels)) < 1e-10
    assert float(losses.margin_eikonal(linear_model(2 * w), x, labels)) == pytest.approx(1.0, rel=1e-5)


def test_margin_eikonal_is_differentiable_in_the_parameters_and_jits():
    x = jax.random.normal(jax.random.PRNGKey(4), (5, 6))
    labels = jnp.array([0, 1, 2, 0, 1])
    w = jax.random.normal(jax.random.PRNGKey(5), (6, 3))
    penalty = jax.jit(lambda w: losses.margin_eikonal(linear_model(w), x, labels))
    grad = jax.grad(penalty)(w)
    eps = 1e-3
    direction = jax.random.normal(jax.random.PRNGKey(6), w.shape)
    numeric = (penalty(w + eps * direction) - penalty(w - eps * direction)) / (2 * eps)
    np.testing.assert_allclose(jnp.sum(grad * direction), numeric, rtol=2e-2)


@pytest.mark.parametrize("call, error, match", [
    (lambda f, x: losses.margin_eikonal(f, x, jnp.array([0, 3])), ValueError, "labels"),
    (lambda f, x: losses.margin_eikonal(f, x, jnp.array([0.0, 1.0])), TypeError, "labels"),
    (lambda f, x: losses.margin_eikonal(f, x, jnp.array([0, 1]), target=0.0), ValueError, "target"),
    (lambda f, x: losses.margin_eikonal(f, x[0], jnp.array([0, 1])), ValueError, "x"),
    (lambda f, x: losses.margin_eikonal(lambda v: f(v)[:, :1], x, jnp.array([0, 0])), ValueError, "C >= 2"),
])
def test_margin_eikonal_bad_inputs(call, error, match):
    f = linear_model(jnp.ones((4, 3)))
    with pytest.raises(error, match=match):
        call(f, jnp.ones((2, 4)))
