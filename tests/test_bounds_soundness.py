"""Soundness of ``lipxai.bounds.interval`` by sampling, for outputs and gradients.

For random networks and random boxes (on the input, and on the parameters: relative
``gamma * |W|`` plus absolute ``delta``), points are drawn inside the boxes -- uniformly,
plus random box corners for a quarter of them and the two extreme corners (every lower,
every upper endpoint) -- and every output of the function at every point must lie in the
Interval that ``interval(fun)`` returns for the boxes, up to
``1e-5 + 1e-5 |value| + 1e-6 max(|lower|, |upper|)``: the rules compute in float32 without
outward rounding, so a centre-radius bound ``c - r`` of size ``B`` carries a rounding error
of order ``1e-7 B``.  The functions checked together are the logits, the input gradient of
one logit, and the input and parameter gradients of the cross-entropy
(``jax.nn.log_softmax``; optax's cross-entropy is checked in ``test_bounds_rules.py``).
Zero-width boxes must give the point values and gradients to ``1e-6``.

Families (one compiled program per family -- the interval program and the evaluation at the
sampled points -- reused by every hypothesis example):

* an MLP 5-8-8-8-8-3 with the hidden activations relu, tanh, GroupSort
  (``lipxai.nn.group_sort(x, 2)``, a min/max network) and softplus; an MLP with a
  ``jnp.sort`` GroupSort of size 4 (the ``sort`` rule, and in its gradients the sort of an
  iota by the keys and the ``scatter-add`` of the cotangents to the sorted positions);
* CNNs on 9x9x2 images: flax and lax convolutions with strides 1 and 2 and SAME/VALID
  padding, flax ``max_pool`` (tiling; overlapping and padded) and ``avg_pool``, lipxai's
  ``L2NormPool`` (tiling and overlapping windows);
* a lipxai 1-Lipschitz model (OrthoConv aol, GroupSort, L2NormPool, OrthoDense bjorck and
  aol) and its ``lipxai.nn.export`` -ed plain version, with parameter boxes on the latter.

Sampled points: ``N_SAMPLES = 1024`` per example, in 8 + 6 (MLP, boxes across the kinks)
+ 6 (sort) + 2 x 5 (CNNs) + 2 x 4 (lipxai model and export, same boxes) + 4 (export with
parameter boxes) = 42 examples, i.e. 43,008 points, each evaluating the logits and all the
gradients above (examples that hypothesis replays from its database come on top).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from jax import lax

import lipxai.nn as lnn
from lipxai.bounds import Interval, box, interval, is_interval

from _fast_compile import FAST_COMPILE

N_SAMPLES = 1024
ATOL = RTOL = 1e-5
BOUND_RTOL = 1e-6  # float32 rounding of the bounds themselves (about 8 ulps)

# -------------------------------------------------------------------------- helpers


def _param_box(params, gamma, delta):
    """``[W - gamma |W| - delta, W + gamma |W| + delta]`` on every parameter."""
    return jax.tree_util.tree_map(
        lambda w: Interval(w - gamma * np.abs(w) - delta, w + gamma * np.abs(w) + delta),
        params)


def _sample(key, args, n):
    """``n`` points in the boxes of ``args`` (points are broadcast): sample 0 is the lower
    corner, sample 1 the upper corner, a quarter are random corners, the rest uniform."""
    leaves, treedef = jax.tree_util.tree_flatten(args, is_leaf=is_interval)
    keys = jax.random.split(key, len(leaves))
    out = []
    for k, leaf in zip(keys, leaves, strict=True):
        if not is_interval(leaf):
            out.append(jnp.broadcast_to(leaf, (n, *jnp.shape(leaf))))
            continue
        k_uniform, k_corner = jax.random.split(k)
        shape = (n, *leaf.shape)
        t = jax.random.uniform(k_uniform, shape, leaf.dtype)
        corner = jax.random.bernoulli(k_corner, 0.5, shape).astype(leaf.dtype)
        i = jnp.arange(n).reshape((n,) + (1,) * leaf.ndim)
        t = jnp.where(i < n // 4, corner, t)
        t = jnp.where(i == 0, 0.0, jnp.where(i == 1, 1.0, t))
        out.append(jnp.where(t == 1.0, leaf.upper, leaf.lower + t * (leaf.upper - leaf.lower)))
    return jax.tree_util.tree_unflatten(treedef, out)


def _excess(bounds, values):
    """Largest amount by which a sampled value leaves its bounds (NaN counts as inf)."""
    leaves, treedef = jax.tree_util.tree_flatten(bounds, is_leaf=is_interval)
    worst = jnp.zeros((), jnp.float32)
    for b, v in zip(leaves, treedef.flatten_up_to(values), strict=True):
        lower, upper = (b.lower, b.upper) if is_interval(b) else (b, b)
        size = jnp.maximum(jnp.abs(lower), jnp.abs(upper))
        tol = ATOL + RTOL * jnp.abs(v) + BOUND_RTOL * jnp.where(jnp.isfinite(size), size, 0.0)
        out = jnp.maximum(lower - tol - v, v - upper - tol)
        worst = jnp.maximum(worst, jnp.max(jnp.where(jnp.isnan(out), jnp.inf, out)))
    return worst


@functools.cache
def _check(fun):
    """``check(args, key) -> (excess, bounds, value at the lower corner)``: the interval
    program of ``fun`` and its evaluation at ``N_SAMPLES`` points of the boxes, compiled once
    per ``fun`` (and argument shapes)."""

    @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
    def check(args, key):
        bounds = interval(fun)(*args)
        values = jax.vmap(fun)(*_sample(key, args, N_SAMPLES))
        return _excess(bounds, values), bounds, jax.tree_util.tree_map(lambda v: v[0], values)

    return check


def _assert_sound(fun, args, seed, finite=("logits",)):
    """Bounds of ``fun`` on ``args`` contain ``fun`` at ``N_SAMPLES`` points of the boxes;
    the bounds named in ``finite`` are finite.  Returns the bounds."""
    excess, bounds, _ = _check(fun)(args, jax.random.PRNGKey(seed))
    assert float(excess) <= 0.0, f"a sampled value leaves its bounds by {float(excess):.3g}"
    for name in finite:
        leaves = jax.tree_util.tree_leaves(bounds[name])
        assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in leaves), name
    return bounds


def _targets(apply, params, x, label, logit_gradient=True):
    """Logits, input gradient of one logit, input and parameter gradients of the
    cross-entropy (``jax.nn.log_softmax``): one forward pass and one backward pass per
    gradient, as ``jax.grad`` of the composite computes them."""
    logits, backward = jax.vjp(apply, params, x)
    grad_logits_ce = jax.grad(lambda z: -jax.nn.log_softmax(z)[label])(logits)
    grad_params_ce, grad_x_ce = backward(grad_logits_ce)
    out = {"logits": logits, "grad_x_ce": grad_x_ce, "grad_params_ce": grad_params_ce}
    if logit_gradient:
        out["grad_x_logit"] = backward(jax.nn.one_hot(label, logits.shape[-1]))[1]
    return out


#: No shrinking: an example costs a fraction of a second, shrinking would take minutes.
SETTINGS = dict(deadline=None, phases=(Phase.explicit, Phase.reuse, Phase.generate))
seed_st = st.integers(0, 2**31 - 1)
gamma_st = st.sampled_from([0.0]) | st.floats(0.0, 0.1)
delta_st = st.sampled_from([0.0]) | st.floats(0.0, 0.02)
EVERYTHING = ("logits", "grad_x_logit", "grad_x_ce", "grad_params_ce")

# -------------------------------------------------------------------------- MLPs

ACTIVATIONS = (jax.nn.relu, jnp.tanh, lambda x: lnn.group_sort(x, 2), jax.nn.softplus)
MLP_SIZES = (5, 8, 8, 8, 8, 3)


def _mlp(params, x):
    """Dense layers with the hidden activations relu, tanh, GroupSort(2), softplus."""
    *hidden, (w, b) = params
    for (wi, bi), act in zip(hidden, ACTIVATIONS, strict=True):
        x = act(x @ wi + bi)
    return x @ w + b


def _mlp_fun(params, x, label):
    return _targets(_mlp, params, x, label)


def _mlp_data(seed, scale=1.0, bias=0.3):
    rng = np.random.default_rng(seed)
    params = []
    for m, n in zip(MLP_SIZES[:-1], MLP_SIZES[1:], strict=True):
        w = scale * rng.normal(size=(m, n)) / np.sqrt(m)
        params.append((w.astype(np.float32), (bias * rng.normal(size=n)).astype(np.float32)))
    return params, rng.normal(size=MLP_SIZES[0]).astype(np.float32)


@settings(max_examples=8, **SETTINGS)
@given(seed=seed_st, eps=st.floats(0.0, 0.2), gamma=gamma_st, delta=delta_st,
       label=st.integers(0, 2), scale=st.floats(0.5, 1.5))
def test_mlp_input_and_parameter_boxes(seed, eps, gamma, delta, label, scale):
    params, x = _mlp_data(seed, scale)
    args = (_param_box(params, gamma, delta), box(x, eps), label)
    # the cross-entropy gradients go through exp(logit - max): finite for narrow boxes only
    _assert_sound(_mlp_fun, args, seed, finite=("logits", "grad_x_logit"))


@settings(max_examples=6, **SETTINGS)
@given(seed=seed_st, eps=st.floats(0.0, 0.05), label=st.integers(0, 2))
def test_mlp_boxes_across_kinks(seed, eps, label):
    """Zero biases and a tiny input: most relu/GroupSort switches of the gradient are
    undecided, the case where ``select_n`` must return hulls."""
    params, x = _mlp_data(seed, bias=0.0)
    bounds = _assert_sound(_mlp_fun, (_param_box(params, 0.0, 0.0), box(0.01 * x, eps), label),
                           seed, finite=EVERYTHING)
    if eps > 0.02:  # the boxes straddle the kinks: the logit gradient is not a point
        assert float(jnp.max(bounds["grad_x_logit"].width)) > 0


def _sort_groupsort(x):
    """GroupSort of size 4 with ``jnp.sort`` (one ``sort`` primitive)."""
    return jnp.sort(x.reshape(*x.shape[:-1], -1, 4), axis=-1).reshape(x.shape)


def _sort_apply(params, x):
    w1, w2, w3 = params
    return _sort_groupsort(_sort_groupsort(x @ w1) @ w2) @ w3


def _sort_mlp(params, x, label):
    return _targets(_sort_apply, params, x, label)


@settings(max_examples=6, **SETTINGS)
@given(seed=seed_st, eps=st.floats(0.0, 0.3), gamma=gamma_st, label=st.integers(0, 2))
def test_sort_groupsort(seed, eps, gamma, label):
    """The ``sort`` rule (exact: order statistics are monotone) and the gradients through it
    (the iota sorted by the keys, the cotangents scattered to the sorted positions)."""
    rng = np.random.default_rng(seed)
    params = [(rng.normal(size=s) / np.sqrt(s[0])).astype(np.float32)
              for s in [(4, 8), (8, 8), (8, 3)]]
    x = rng.normal(size=4).astype(np.float32)
    _assert_sound(_sort_mlp, (_param_box(params, gamma, 0.0), box(x, eps), label), seed,
                  finite=("logits", "grad_x_logit"))


# -------------------------------------------------------------------------- CNNs


def _lax_conv(x, kernel, strides, padding):
    return lax.conv_general_dilated(x, kernel, strides, padding,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


class CNN(nn.Module):
    """Two convolutions (flax ``nn.Conv``, then ``lax.conv_general_dilated``) and pools."""

    variant: str

    @nn.compact
    def __call__(self, x):
        init = nn.initializers.lecun_normal()
        if self.variant == "A":  # 9x9 -> 9x9 -> 4x4 -> 2x2 -> 2x2
            x = nn.relu(nn.Conv(4, (3, 3), strides=1, padding="SAME")(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))  # tiling windows
            x = _lax_conv(x, self.param("k2", init, (2, 2, 4, 4)), (2, 2), "VALID")
            x = nn.avg_pool(jnp.tanh(x), (2, 2), strides=(1, 1), padding="SAME")
        else:  # 9x9 -> 4x4 -> 4x4 -> 2x2 -> 2x2 -> 1x1
            x = nn.Conv(4, (3, 3), strides=2, padding="VALID")(x)
            x = lnn.group_sort(x, 2)
            x = nn.max_pool(x, (2, 2), strides=(1, 1), padding="SAME")  # overlapping, padded
            x = lnn.L2NormPool(2)(x)  # tiling windows
            x = _lax_conv(x, self.param("k2", init, (3, 3, 4, 4)), (1, 1), "SAME")
            x = lnn.L2NormPool(window=2, strides=1)(jax.nn.softplus(x))  # overlapping
        return nn.Dense(3)(x.reshape(x.shape[0], -1))[0]


CNN_INPUT = (1, 9, 9, 2)


@functools.cache
def _cnn(variant):
    """``(fun, params treedef, parameter shapes)``."""
    model = CNN(variant)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros(CNN_INPUT))["params"]

    def fun(params, x, label):
        return _targets(lambda p, x: model.apply({"params": p}, x), params, x, label,
                        logit_gradient=False)

    leaves, treedef = jax.tree_util.tree_flatten(shapes)
    return fun, treedef, [leaf.shape for leaf in leaves]


@pytest.mark.parametrize("variant", ["A", "B"])
@settings(max_examples=5, **SETTINGS)
@given(seed=seed_st, eps=st.floats(0.0, 0.2), gamma=gamma_st, delta=delta_st,
       label=st.integers(0, 2), scale=st.floats(0.5, 1.5))
def test_cnn_input_and_parameter_boxes(variant, seed, eps, gamma, delta, label, scale):
    fun, treedef, shapes = _cnn(variant)
    rng = np.random.default_rng(seed)
    leaves = [(scale * rng.normal(size=s) / np.sqrt(np.prod(s[:-1]))).astype(np.float32)
              for s in shapes]
    params = jax.tree_util.tree_unflatten(treedef, leaves)
    x = rng.normal(size=CNN_INPUT).astype(np.float32)
    # L2NormPool's gradient is unbounded where a window may be all zeros
    finite = ("logits", "grad_x_ce", "grad_params_ce") if variant == "A" else ("logits",)
    _assert_sound(fun, (_param_box(params, gamma, delta), box(x, eps), label), seed, finite)


# -------------------------------------------------------------------------- lipxai models

LIP_INPUT = (1, 6, 6, 1)  # 6x6 -> 6x6x4 -> 3x3x4 -> 36 -> 8 -> 4


@functools.cache
def _lipschitz():
    """``(model, export, variables, exported variables)`` of a small 1-Lipschitz model."""
    with jax.ensure_compile_time_eval():  # concrete even when first called under a trace
        return _build_lipschitz()


def _build_lipschitz():
    model = nn.Sequential([
        lnn.OrthoConv(4, 3, method="aol"), lnn.GroupSort(2), lnn.L2NormPool(2),
        lnn.Flatten(), lnn.OrthoDense(8, method="bjorck"), lnn.GroupSort(2),
        lnn.OrthoDense(4, method="aol"),
    ])
    # random raw parameters (any values: the layers reparametrise them), biases included so
    # that the kinks are not all at the origin
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros(LIP_INPUT))
    leaves, treedef = jax.tree_util.tree_flatten(shapes)
    rng = np.random.default_rng(0)
    variables = jax.tree_util.tree_unflatten(treedef, [
        (rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1]))).astype(np.float32)
        for s in leaves])
    plain = []

    def export(variables):
        module, plain_variables = lnn.export(model, variables)
        plain.append(module)
        return plain_variables

    plain_variables = jax.jit(export, compiler_options=FAST_COMPILE)(variables)
    return model, plain[0], variables, plain_variables


def _lipschitz_fun(x, label):
    """Logits and input gradients of the 1-Lipschitz model (weights computed from the raw
    parameters by Bjorck/AOL on points, inside the interval program)."""
    model, _, variables, _ = _lipschitz()
    out = _targets(lambda _, x: model.apply(variables, x)[0], (), x, label)
    del out["grad_params_ce"]
    return out


def _exported_fun(variables, x, label):
    plain = _lipschitz()[1]
    return _targets(lambda v, x: plain.apply(v, x)[0], variables, x, label)


@settings(max_examples=4, **SETTINGS)
@given(xseed=seed_st, eps=st.floats(0.0, 0.3), label=st.integers(0, 3))
def test_lipschitz_model_and_export(xseed, eps, label):
    """Input boxes on a 1-Lipschitz model and on its export: both sound, and the same
    bounds (the same interval program once the weights are frozen)."""
    plain_variables = _lipschitz()[3]
    x = box(np.random.default_rng(xseed).normal(size=LIP_INPUT).astype(np.float32), eps)
    finite = ("logits", "grad_x_logit")
    bounds = _assert_sound(_lipschitz_fun, (x, label), xseed, finite)
    exported = _assert_sound(_exported_fun, (_param_box(plain_variables, 0.0, 0.0), x, label),
                             xseed, finite)
    for name in ("logits", "grad_x_logit", "grad_x_ce"):
        for a, b in ((bounds[name].lower, exported[name].lower),
                     (bounds[name].upper, exported[name].upper)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@settings(max_examples=4, **SETTINGS)
@given(xseed=seed_st, eps=st.floats(0.0, 0.3), gamma=st.floats(0.0, 0.05), delta=delta_st,
       label=st.integers(0, 3))
def test_exported_model_parameter_boxes(xseed, eps, gamma, delta, label):
    """Parameter boxes on the frozen weights of the exported (plain) model."""
    plain_variables = _lipschitz()[3]
    x = np.random.default_rng(xseed).normal(size=LIP_INPUT).astype(np.float32)
    _assert_sound(_exported_fun, (_param_box(plain_variables, gamma, delta), box(x, eps), label),
                  xseed)


# -------------------------------------------------------------------------- zero-width boxes


def _zero_width_cases():
    params, x = _mlp_data(0)
    yield "mlp", _mlp_fun, (_param_box(params, 0.0, 0.0), box(x, 0.0), 1)
    for variant in ("A", "B"):
        fun, treedef, shapes = _cnn(variant)
        rng = np.random.default_rng(1)
        leaves = [(rng.normal(size=s) / np.sqrt(np.prod(s[:-1]))).astype(np.float32)
                  for s in shapes]
        params = jax.tree_util.tree_unflatten(treedef, leaves)
        x = rng.normal(size=CNN_INPUT).astype(np.float32)
        yield f"cnn {variant}", fun, (_param_box(params, 0.0, 0.0), box(x, 0.0), 2)
    x = box(np.random.default_rng(2).normal(size=LIP_INPUT).astype(np.float32), 0.0)
    yield "lipschitz", _lipschitz_fun, (x, 3)
    yield "exported", _exported_fun, (_param_box(_lipschitz()[3], 0.0, 0.0), x, 3)


def test_zero_width_boxes_are_exact():
    """Zero-width boxes on the input and on every parameter give the point value and the
    point gradients, to ``1e-6`` (relative to their size): no rule widens a point."""
    for name, fun, args in _zero_width_cases():
        _, bounds, value = _check(fun)(args, jax.random.PRNGKey(0))
        flat = jax.tree_util.tree_leaves_with_path(bounds, is_leaf=is_interval)
        for (path, b), v in zip(flat, jax.tree_util.tree_leaves(value), strict=True):
            where = f"{name}{jax.tree_util.keystr(path)}"
            lower, upper = (b.lower, b.upper) if is_interval(b) else (b, b)
            np.testing.assert_allclose(lower, v, rtol=1e-6, atol=1e-6, err_msg=where)
            np.testing.assert_allclose(upper, v, rtol=1e-6, atol=1e-6, err_msg=where)
