"""Unit tests of the interval rules of ``lipxai.bounds``, one primitive (or pattern) at a time.

Exactness where the rule must be exact (affine maps in centre-radius form, monotone
functions at the endpoints, log_softmax at its extreme corners, sin/cos/abs/powers), three-
valued logic, hulls for uncertain control flow (select_n, cond, max-pool gradient), the call
primitives (jit, custom_jvp/vjp, checkpoint, scan), loud failures for unsupported
primitives, composition with jit/vmap, and differentiability of the bounds (float64 finite
differences).  Sampling checks here are small and dense; the model-level sampling is
in ``test_bounds_soundness.py``.
"""

from __future__ import annotations

import itertools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

import lipxai.bounds as lb
from lipxai.bounds import Interval, box, interval, is_interval, patterns

from _fast_compile import fast_jit


def iv(lower, upper, dtype=np.float32) -> Interval:
    return Interval(np.asarray(lower, dtype), np.asarray(upper, dtype))


def grid(x: Interval, n: int = 2001) -> np.ndarray:
    """``n`` evenly spaced points of a box per coordinate, endpoints included, plus the
    point nearest to 0: ``[n + 1, d]``."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    lo, hi = np.asarray(x.lower, np.float64), np.asarray(x.upper, np.float64)
    return np.concatenate([lo + t * (hi - lo), np.clip(0.0, lo, hi)[None]]).astype(np.float32)


def assert_contains(bounds: Interval, values, tol=1e-5):
    values = np.asarray(values)
    lo, hi = np.asarray(bounds.lower), np.asarray(bounds.upper)
    assert np.all(lo - tol - tol * np.abs(values) <= values), (lo, values.min(0))
    assert np.all(values <= hi + tol + tol * np.abs(values)), (hi, values.max(0))


def assert_tight(bounds: Interval, values, tol=1e-4):
    """The bounds are the extremes of the sampled values (exact rule, dense sampling)."""
    assert_contains(bounds, values)
    np.testing.assert_allclose(bounds.lower, np.min(values, axis=0), atol=tol, rtol=tol)
    np.testing.assert_allclose(bounds.upper, np.max(values, axis=0), atol=tol, rtol=tol)


# -------------------------------------------------------------------------- interface


def test_points_stay_points_and_programs_without_intervals_are_unchanged():
    x, y = iv([0.0, 1.0], [1.0, 2.0]), jnp.array([3.0, 4.0])
    a, b = interval(lambda x, y: (jnp.sin(x) * 2.0, y * y + 1.0))(x, y)
    assert is_interval(a) and not is_interval(b)
    np.testing.assert_array_equal(b, y * y + 1.0)
    out = interval(lambda y: jnp.tanh(y) @ jnp.ones((2, 2)))(y)
    np.testing.assert_array_equal(out, jnp.tanh(y) @ jnp.ones((2, 2)))


def test_box_and_interval_checks():
    b = box(jnp.array([1.0, -1.0]), 0.5)
    np.testing.assert_array_equal(b.lower, [0.5, -1.5])
    np.testing.assert_array_equal(b.upper, [1.5, -0.5])
    with pytest.raises(ValueError):
        box(jnp.zeros(2), -1.0)
    with pytest.raises(ValueError, match="lower > upper"):
        iv([0.0, 2.0], [1.0, 1.0]).check()
    h = lb.hull(iv([0.0], [1.0]), jnp.array([3.0]))
    np.testing.assert_array_equal([h.lower, h.upper], [[0.0], [3.0]])


# -------------------------------------------------------------------------- linear maps


def test_dense_is_exact_centre_radius():
    """``x W + b`` with a point W is exactly ``c W + b +/- r |W|`` (numpy, float64)."""
    rng = np.random.default_rng(0)
    c, r = rng.normal(size=(3, 5)), rng.uniform(0, 0.5, size=(3, 5))
    w, b = rng.normal(size=(5, 4)), rng.normal(size=4)
    out = interval(lambda x, w, b: x @ w + b)(iv(c - r, c + r), w.astype(np.float32),
                                              b.astype(np.float32))
    np.testing.assert_allclose(out.lower, c @ w + b - r @ np.abs(w), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.upper, c @ w + b + r @ np.abs(w), rtol=1e-5, atol=1e-5)
    # an exact interval map: the bounds are attained by the corners x = c -/+ r sign(W)
    worst = (c[:, :, None] - r[:, :, None] * np.sign(w)[None]).transpose(0, 2, 1)
    np.testing.assert_allclose(out.lower, np.einsum("bok,ko->bo", worst, w) + b, rtol=1e-5,
                               atol=1e-5)
    # point input, interval weights: x W_c +/- |x| W_r
    x, wr = rng.normal(size=(3, 5)), rng.uniform(0, 0.2, size=(5, 4))
    out = interval(lambda x, w: x @ w)(x.astype(np.float32), iv(w - wr, w + wr))
    np.testing.assert_allclose(out.lower, x @ w - np.abs(x) @ wr, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.upper, x @ w + np.abs(x) @ wr, rtol=1e-5, atol=1e-5)


def test_dense_with_both_operands_intervals_is_sound():
    """Rump's midpoint-radius product: contains every product of corners (the extremes of a
    bilinear map over a box are at its corners) and is at most 1.5x the exact width."""
    rng = np.random.default_rng(1)
    xc, xr = rng.normal(size=(1, 3)), rng.uniform(0, 0.5, size=(1, 3))
    wc, wr = rng.normal(size=(3, 2)), rng.uniform(0, 0.5, size=(3, 2))
    out = interval(lambda x, w: x @ w)(iv(xc - xr, xc + xr), iv(wc - wr, wc + wr))
    # exact bounds: each product term independently at its extreme corner
    terms = np.stack([(xc + sx * xr)[0][:, None] * (wc + sw * wr)
                      for sx in (-1, 1) for sw in (-1, 1)])
    exact_lo, exact_hi = terms.min(0).sum(0), terms.max(0).sum(0)
    assert np.all(out.lower <= exact_lo + 1e-5) and np.all(out.upper >= exact_hi - 1e-5)
    assert np.all(out.upper - out.lower <= 1.5 * (exact_hi - exact_lo) + 1e-5)


def _numpy_conv(x, k, stride, padding):
    """NHWC x HWIO cross-correlation in float64 with lax's padding convention."""
    kh, kw = k.shape[:2]
    pads = lax.padtype_to_pads(x.shape[1:3], (kh, kw), (stride, stride), padding)
    x = np.pad(x, ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)))
    oh, ow = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], oh, ow, k.shape[3]))
    for i, j in itertools.product(range(oh), range(ow)):
        patch = x[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
        out[:, i, j, :] = np.einsum("bhwc,hwco->bo", patch, k)
    return out


@pytest.mark.parametrize("stride,padding", [(1, "SAME"), (2, "VALID"), (2, "SAME")])
def test_conv_is_exact_centre_radius(stride, padding):
    rng = np.random.default_rng(stride)
    c, r = rng.normal(size=(1, 5, 5, 2)), rng.uniform(0, 0.3, size=(1, 5, 5, 2))
    k = rng.normal(size=(3, 3, 2, 3))

    def conv(x, k):
        return lax.conv_general_dilated(x, k, (stride, stride), padding,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

    out = interval(conv)(iv(c - r, c + r), k.astype(np.float32))
    centre, radius = _numpy_conv(c, k, stride, padding), _numpy_conv(r, np.abs(k), stride,
                                                                     padding)
    np.testing.assert_allclose(out.lower, centre - radius, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.upper, centre + radius, rtol=1e-5, atol=1e-5)


def test_mul_and_dot_with_unbounded_intervals_do_not_give_nan():
    """``0 * inf`` is 0 for interval bounds (inf stands for unbounded reals)."""
    unbounded = iv([-np.inf, 0.0], [np.inf, 1.0])
    out = interval(lambda x, y: x * y)(unbounded, iv([0.0, 0.0], [1.0, 0.0]))
    assert not np.any(np.isnan(out.lower)) and not np.any(np.isnan(out.upper))
    np.testing.assert_array_equal(out.lower, [-np.inf, 0.0])
    np.testing.assert_array_equal(out.upper, [np.inf, 0.0])
    out = interval(lambda x: x * jnp.array([0.0, 2.0]))(unbounded)
    np.testing.assert_array_equal([out.lower, out.upper], [[0.0, 0.0], [0.0, 2.0]])
    out = interval(lambda x: x @ jnp.array([[0.0, 1.0], [1.0, 0.0]]))(unbounded)
    assert not np.any(np.isnan(out.lower)) and not np.any(np.isnan(out.upper))
    assert out.lower[1] == -np.inf and out.upper[1] == np.inf


# -------------------------------------------------------------------------- monotone maps

LOWER = np.array([-2.0, -0.5, 0.3, 1.0], np.float32)
UPPER = np.array([-1.0, 0.5, 0.7, 3.0], np.float32)
INCREASING = {
    "exp": jnp.exp, "expm1": jnp.expm1, "tanh": jnp.tanh, "logistic": jax.nn.sigmoid,
    "erf": jax.scipy.special.erf, "atan": jnp.arctan, "asinh": jnp.arcsinh,
    "sinh": jnp.sinh, "cbrt": jnp.cbrt, "floor": jnp.floor, "ceil": jnp.ceil,
    "round": jnp.round, "sign": jnp.sign, "relu (max)": jax.nn.relu,
    "softplus (logaddexp)": jax.nn.softplus, "cumsum": jnp.cumsum, "cummax": lax.cummax,
    "sort": jnp.sort, "reduce_max": jnp.max, "reduce_sum": jnp.sum,
    "clamp": lambda x: jnp.clip(x, -1.0, 1.0),
    "reduce_window_max": lambda x: lax.reduce_window(x, -jnp.inf, lax.max, (2,), (1,), "SAME"),
    "reduce_window_sum": lambda x: lax.reduce_window(x, 0.0, lax.add, (3,), (1,), "VALID"),
}


@pytest.mark.parametrize("name", sorted(INCREASING))
def test_increasing_maps_are_exact_at_the_endpoints(name):
    f = INCREASING[name]
    out = interval(f)(iv(LOWER, UPPER))
    np.testing.assert_allclose(out.lower, f(LOWER), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out.upper, f(UPPER), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("f,lower,upper", [
    (jnp.negative, LOWER, UPPER), (lax.rsqrt, [0.5, 1.0], [2.0, 4.0]),
    (jax.scipy.special.erfc, LOWER, UPPER), (jnp.arccos, [-0.9, 0.1], [-0.2, 0.8]),
])
def test_decreasing_maps_are_exact_at_the_endpoints(f, lower, upper):
    lower, upper = np.asarray(lower, np.float32), np.asarray(upper, np.float32)
    out = interval(f)(iv(lower, upper))
    np.testing.assert_allclose(out.lower, f(upper), rtol=1e-6)
    np.testing.assert_allclose(out.upper, f(lower), rtol=1e-6)


def test_monotone_maps_on_restricted_domains_are_clipped_to_the_domain():
    """Outside the domain the primitive gives NaN; the bounds cover the real outputs."""
    x = iv([-1.0, -1.0], [4.0, 0.0])
    out = interval(jnp.sqrt)(x)
    np.testing.assert_array_equal([out.lower, out.upper], [[0.0, 0.0], [2.0, 0.0]])
    out = interval(jnp.log)(iv([-1.0], [math.e]))
    assert out.lower[0] == -np.inf and abs(out.upper[0] - 1.0) < 1e-6
    out = interval(lax.rsqrt)(iv([-1.0], [4.0]))
    np.testing.assert_array_equal([out.lower, out.upper], [[0.5], [np.inf]])
    out = interval(jnp.arccos)(iv([-2.0], [0.5]))
    np.testing.assert_allclose([out.lower, out.upper], [[math.acos(0.5)], [math.pi]], rtol=1e-6)


# -------------------------------------------------------------------------- logic

F, T, U = (False, False), (True, True), (False, True)  # three-valued truth, as [lo, hi]


def _truth(lower, upper):
    return list(zip(np.asarray(lower).tolist(), np.asarray(upper).tolist(), strict=True))


def test_comparisons_are_three_valued():
    a = iv([0.0, 2.0, 0.0, 1.0, 1.0], [1.0, 3.0, 4.0, 1.0, 2.0])
    b = jnp.array([2.0, 1.0, 2.0, 1.0, 1.0])
    expect = {  # certainly below, certainly above, straddles, equal point, touches at lo
        "gt": [F, T, U, F, U], "ge": [F, T, U, T, T], "lt": [T, F, U, F, F],
        "le": [T, F, U, T, U], "eq": [F, F, U, T, U], "ne": [T, T, U, F, U],
    }
    ops = {"gt": jnp.greater, "ge": jnp.greater_equal, "lt": jnp.less, "le": jnp.less_equal,
           "eq": jnp.equal, "ne": jnp.not_equal}
    for name, op in ops.items():
        out = interval(op)(a, b)
        assert _truth(out.lower, out.upper) == expect[name], name
    # the mirrored comparison (interval on the right), and interval against interval
    out = interval(lambda b, a: b < a)(b, a)
    assert _truth(out.lower, out.upper) == expect["gt"]
    out = interval(jnp.greater)(iv([0.0, 3.0, 0.0], [1.0, 4.0, 2.0]),
                                iv([2.0, 1.0, 1.0], [3.0, 2.0, 3.0]))
    assert _truth(out.lower, out.upper) == [F, T, U]


def test_comparing_a_variable_with_itself_is_decided():
    out = interval(lambda x: (x == x, x >= x, x > x, x != x))(iv([0.0], [1.0]))
    assert [bool(np.asarray(o).all()) for o in out] == [True, True, False, False]


@pytest.mark.parametrize("op", [jnp.logical_and, jnp.logical_or, jnp.logical_xor])
def test_boolean_connectives_are_exact_on_three_valued_inputs(op):
    values = [F, T, U]
    pairs = list(itertools.product(values, values))
    a = Interval(np.array([p[0][0] for p in pairs]), np.array([p[0][1] for p in pairs]))
    b = Interval(np.array([p[1][0] for p in pairs]), np.array([p[1][1] for p in pairs]))
    out = interval(op)(a, b)
    for k, (va, vb) in enumerate(pairs):
        possible = {bool(op(x, y)) for x in set(va) for y in set(vb)}
        assert (bool(out.lower[k]), bool(out.upper[k])) == (min(possible), max(possible))
    out = interval(jnp.logical_not)(a)
    assert _truth(out.lower, out.upper) == [(not hi, not lo) for lo, hi in
                                            zip(a.lower.tolist(), a.upper.tolist(), strict=True)]


def test_is_finite_is_three_valued():
    x = iv([1.0, -np.inf, np.inf, -np.inf], [2.0, 0.0, np.inf, np.inf])
    out = interval(jnp.isfinite)(x)
    assert _truth(out.lower, out.upper) == [T, U, F, U]


# -------------------------------------------------------------------------- select / cond


def test_select_n_takes_the_hull_when_the_predicate_is_uncertain():
    x = iv([-1.0, 1.0, -3.0], [2.0, 2.0, -2.0])
    on_true, on_false = iv([10.0, 10.0, 10.0], [11.0, 11.0, 11.0]), jnp.array([0.0, 0.0, 0.0])
    out = interval(lambda x, t, f: jnp.where(x > 0, t, f))(x, on_true, on_false)
    np.testing.assert_array_equal(out.lower, [0.0, 10.0, 0.0])
    np.testing.assert_array_equal(out.upper, [11.0, 11.0, 0.0])
    # integer selector in [0, 1] out of three cases: the third case is excluded
    which = Interval(np.array([0, 1], np.int32), np.array([1, 2], np.int32))
    cases = [jnp.array([1.0, 1.0]), jnp.array([2.0, 2.0]), jnp.array([30.0, 30.0])]
    out = interval(lambda i, *c: lax.select_n(i, *c))(which, *cases)
    np.testing.assert_array_equal([out.lower, out.upper], [[1.0, 2.0], [2.0, 30.0]])


def _branches(x):
    return [lambda x: x * 2.0, lambda x: jnp.sin(x), lambda x: -x - 5.0]


def test_cond_with_point_and_uncertain_index():
    x = iv([0.5, 1.0], [1.0, 2.0])

    def f(x, k):
        return lax.switch(k, _branches(x), x)

    out = interval(f)(x, 2)  # point index: exactly that branch
    np.testing.assert_allclose([out.lower, out.upper], [[-6.0, -7.0], [-5.5, -6.0]])
    out = interval(lambda x: lax.cond(jnp.sum(x) > 0, jnp.exp, jnp.negative, x))(x)
    np.testing.assert_allclose(out.lower, np.exp(x.lower), rtol=1e-6)  # certain predicate

    def g(x):  # the index is uncertain: floor(x[0]) in {0, 1} for x[0] in [0.5, 1.0]
        k = jnp.clip(jnp.floor(x[0]).astype(jnp.int32), 0, 2)
        return lax.switch(k, _branches(x), x)

    out = interval(g)(x)
    both = [interval(b)(x) for b in _branches(x)[:2]]
    np.testing.assert_allclose(out.lower, np.minimum(both[0].lower, both[1].lower))
    np.testing.assert_allclose(out.upper, np.maximum(both[0].upper, both[1].upper))
    samples = grid(x, 101)
    assert_contains(out, jax.vmap(g)(samples))


def test_cond_gradient_with_uncertain_predicate_is_sound():
    def f(x):
        return lax.cond(x[0] > 0.0, lambda x: jnp.sum(x ** 3), lambda x: jnp.sum(jnp.sin(x)), x)

    x = iv([-0.5, 0.2], [0.5, 0.4])
    samples = grid(x, 401)
    assert_contains(interval(jax.grad(f))(x), jax.vmap(jax.grad(f))(samples))


# -------------------------------------------------------------------------- calls, scan


def test_scan_with_an_interval_carry_is_exact_for_a_monotone_body():
    xs = jnp.array([1.0, -2.0, 0.5, 3.0])

    def f(init, xs):
        return lax.scan(lambda c, x: (0.5 * c + x, c * c), init, xs)

    (carry, ys), (lo_c, lo_y), (hi_c, hi_y) = (
        interval(f)(iv(1.0, 2.0), xs), f(1.0, xs), f(2.0, xs))
    np.testing.assert_allclose([carry.lower, carry.upper], [lo_c, hi_c], rtol=1e-6)
    np.testing.assert_allclose(ys.lower, np.minimum(lo_y, hi_y), rtol=1e-6)  # carries > 0
    np.testing.assert_allclose(ys.upper, np.maximum(lo_y, hi_y), rtol=1e-6)
    # a point carry that an Interval reaches through xs is promoted; fori_loop is a scan
    (carry, _) = interval(lambda xs: lax.scan(lambda c, x: (c + x, None), 0.0, xs))(
        iv([0.0, 1.0], [1.0, 2.0]))
    np.testing.assert_allclose([carry.lower, carry.upper], [1.0, 3.0])
    out = interval(lambda x: lax.fori_loop(0, 3, lambda i, c: c * x, 1.0))(iv(1.0, 2.0))
    np.testing.assert_allclose([out.lower, out.upper], [1.0, 8.0])


def test_gradient_through_scan_is_sound():
    w = jnp.array([[0.5, -0.3], [0.2, 0.8]])

    def f(x):
        final, _ = lax.scan(lambda h, _: (jnp.tanh(h @ w + x), None), jnp.zeros(2), None,
                            length=3)
        return jnp.sum(final * jnp.array([1.0, -2.0]))

    x = iv([-0.3, 0.1], [0.2, 0.4])
    samples = np.random.default_rng(0).uniform(x.lower, x.upper, size=(2000, 2)).astype(
        np.float32)
    assert_contains(interval(f)(x), jax.vmap(f)(samples))
    assert_contains(interval(jax.grad(f))(x), jax.vmap(jax.grad(f))(samples))


@jax.custom_jvp
def _cube(x):
    return x ** 3


_cube.defjvp(lambda primals, tangents: (_cube(primals[0]), 7.0 * primals[0] * tangents[0]))


@jax.custom_vjp
def _twice(x):
    return 2.0 * x


_twice.defvjp(lambda x: (2.0 * x, x), lambda x, g: (5.0 * g * x,))


@pytest.mark.parametrize("wrap", ["jit", "checkpoint", "custom_jvp", "custom_vjp"])
def test_call_primitives_interpret_their_bodies(wrap):
    """Forward bounds are those of the body; gradients follow the custom rules (7x for
    ``_cube``, ``5 g x`` for ``_twice``) -- the program that ``jax.grad`` runs."""
    x = iv([-1.0, 0.5], [0.5, 2.0])
    if wrap == "custom_jvp":
        f, plain, grad = _cube, lambda x: x ** 3, lambda x: 7.0 * x
    elif wrap == "custom_vjp":
        f, plain, grad = _twice, lambda x: 2.0 * x, lambda x: 5.0 * x
    else:
        plain = lambda x: jnp.tanh(x) * x  # noqa: E731
        f = jax.jit(plain) if wrap == "jit" else jax.checkpoint(plain)
        grad = jax.grad(lambda x: plain(x))
    out, ref = interval(f)(x), interval(plain)(x)
    np.testing.assert_allclose([out.lower, out.upper], [ref.lower, ref.upper], rtol=1e-6)
    g = interval(jax.grad(lambda x: jnp.sum(f(x))))(x)
    samples = grid(x, 401)
    assert_contains(g, jax.vmap(jax.vmap(grad))(samples))


# -------------------------------------------------------------------------- elementwise


@pytest.mark.parametrize("lower,upper", [(0.0, 1.0), (1.0, 2.0), (3.0, 7.0), (-2.0, 5.0),
                                         (-8.0, -4.0), (10.0, 17.0), (-1.0, -1.0)])
def test_sin_cos_are_exact(lower, upper):
    x = iv([lower], [upper])
    for f in (jnp.sin, jnp.cos):
        assert_tight(interval(f)(x), f(grid(x, 20001)))


@pytest.mark.parametrize("f", [jnp.abs, jnp.square, lambda x: x * x, lambda x: x ** 2,
                               lambda x: x ** 3, lambda x: x ** 4,
                               lambda x: lax.integer_pow(x, 5)])
def test_abs_square_and_positive_integer_powers_are_exact(f):
    x = iv([-2.0, -2.0, 0.5, -3.0], [1.0, -1.0, 2.0, 3.0])
    assert_tight(interval(f)(x), f(grid(x)))


def test_one_minus_square_is_exact():
    """The rule of jax 0.11's ``one_minus_square`` (tanh's derivative), called directly: the
    primitive does not exist in older jax."""
    x = iv([-2.0, -2.0, 0.5, -3.0], [1.0, -1.0, 2.0, 3.0])
    assert_tight(lb.RULES["one_minus_square"](x), 1 - grid(x) ** 2)


def test_negative_integer_powers():
    x = iv([0.5, -2.0, -1.0, -1.0], [2.0, -0.5, 2.0, 2.0])
    for y in (-1, -2, -3):
        out = interval(lambda x, y=y: lax.integer_pow(x, y))(x)
        assert_tight(Interval(out.lower[:2], out.upper[:2]), lax.integer_pow(grid(x)[:, :2], y))
        assert np.all(np.isinf(out.lower[2:])) or y % 2 == 0
        assert np.all(out.upper[2:] == np.inf)  # pole at 0


def test_division():
    a, b = iv([1.0, -1.0, 1.0, 2.0], [2.0, 1.0, 2.0, 3.0]), iv([0.5, 2.0, -1.0, -0.5],
                                                              [1.0, 4.0, 1.0, 0.0])
    out = interval(jnp.divide)(a, b)
    samples = [grid(a, 101)[:, None, :], grid(b, 101)[None, :, :]]
    values = (samples[0] / samples[1]).reshape(-1, 4)
    assert_tight(Interval(out.lower[:2], out.upper[:2]), values[:, :2])
    # 0 in the denominator: unbounded
    np.testing.assert_array_equal([out.lower[2:], out.upper[2:]],
                                  [[-np.inf, -np.inf], [np.inf, np.inf]])
    out = interval(lambda a: a / -2.0)(a)  # point denominator: exact, endpoints swapped
    np.testing.assert_allclose([out.lower, out.upper], [-a.upper / 2, -a.lower / 2])


def test_pow():
    base, expo = iv([0.5, 1.5], [2.0, 3.0]), iv([-1.0, 0.5], [2.0, 2.0])
    out = interval(jnp.power)(base, expo)
    b, e = grid(base, 201), grid(expo, 201)
    assert_tight(out, (b[:, None, :] ** e[None, :, :]).reshape(-1, 2), tol=1e-3)
    # negative bases with a point, integer-valued float exponent: real values
    x = iv([-2.0, -2.0, -3.0], [1.0, 1.0, -1.0])
    for y, expect_lo, expect_hi in [(2.0, [0.0, 0.0, 1.0], [4.0, 4.0, 9.0]),
                                    (3.0, [-8.0, -8.0, -27.0], [1.0, 1.0, -1.0])]:
        out = interval(lambda x, y=y: x ** y)(x)
        np.testing.assert_allclose([out.lower, out.upper], [expect_lo, expect_hi], rtol=1e-6)
    out = interval(lambda x: x ** -1.0)(x)  # the pole at 0 is inside the first two
    assert np.all(out.lower[:2] == -np.inf) and np.all(out.upper[:2] == np.inf)
    np.testing.assert_allclose([out.lower[2], out.upper[2]], [-1.0, -1.0 / 3.0], rtol=1e-6)


# -------------------------------------------------------------------------- softmax


def _corner_log_softmax(lower, upper, axis):
    """``log_softmax`` of the corner ``(x_i = own_i, x_j = other_j)``, element ``i``, for
    every ``i`` along ``axis``, by brute force."""
    n = lower.shape[axis]
    lo_out, hi_out = np.empty_like(lower), np.empty_like(upper)
    for i in range(n):
        take = [slice(None)] * lower.ndim
        take[axis] = i
        take = tuple(take)
        worst, best = upper.copy(), lower.copy()
        worst[take], best[take] = lower[take], upper[take]
        lo_out[take] = np.asarray(jax.nn.log_softmax(worst, axis=axis))[take]
        hi_out[take] = np.asarray(jax.nn.log_softmax(best, axis=axis))[take]
    return lo_out, hi_out


@pytest.mark.parametrize("width,axis", [(0.0, -1), (0.3, -1), (2.0, 0), (30.0, -1)])
def test_log_softmax_bounds_are_attained_at_the_extreme_corners(width, axis):
    rng = np.random.default_rng(0)
    c = rng.normal(size=(2, 5)).astype(np.float32)
    r = (width * rng.uniform(0.2, 1.0, size=c.shape)).astype(np.float32)
    x = iv(c - r, c + r)
    out = interval(lambda x: jax.nn.log_softmax(x, axis=axis))(x)
    lo, hi = _corner_log_softmax(np.asarray(x.lower), np.asarray(x.upper), axis)
    np.testing.assert_allclose(out.lower, lo, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.upper, hi, rtol=1e-5, atol=1e-6)
    if width == 0.0:
        np.testing.assert_allclose(out.lower, jax.nn.log_softmax(c, axis=axis), atol=1e-6)


def test_log_softmax_with_a_dominant_wide_logit():
    """``x_i`` in ``[0, 100]`` against a point 0: the lower bound of ``log_softmax_i`` is
    ``log(1/2)`` (at ``x_i = 0``), not the cancelled ``0`` of ``log(sum) - exp(x_i)``."""
    out = interval(jax.nn.log_softmax)(iv([0.0, 0.0], [0.0, 100.0]))
    np.testing.assert_allclose(out.lower, [-100.0, -math.log(2)], rtol=1e-5)
    np.testing.assert_allclose(out.upper, [-math.log(2), 0.0], atol=1e-6)


def test_softmax_bounds():
    rng = np.random.default_rng(3)
    c = rng.normal(size=4).astype(np.float32)
    x = iv(c - 0.5, c + 0.5)
    samples = np.concatenate([
        np.asarray(x.lower) + np.asarray(x.width) * rng.uniform(size=(4000, 4)),
        np.array(list(itertools.product(*zip(x.lower.tolist(), x.upper.tolist(),
                                             strict=True))))])
    # jax.nn.softmax (element-wise interval arithmetic through its body): sound
    assert_contains(interval(jax.nn.softmax)(x), jax.vmap(jax.nn.softmax)(samples))

    @jax.jit
    def softmax(x):  # a jitted function named softmax gets the exact rule
        return jnp.exp(jax.nn.log_softmax(x))

    out = interval(softmax)(x)
    lo, hi = _corner_log_softmax(np.asarray(x.lower), np.asarray(x.upper), 0)
    np.testing.assert_allclose([out.lower, out.upper], [np.exp(lo), np.exp(hi)], rtol=1e-5)
    assert_contains(out, jax.vmap(jax.nn.softmax)(samples))


def test_cross_entropy_gradients_are_sound():
    """``optax`` integer-label cross-entropy (logsumexp, ``is_finite``) and log_softmax, on a
    linear model: input and weight gradients against sampled boxes."""
    rng = np.random.default_rng(4)
    w = rng.normal(size=(3, 4)).astype(np.float32)
    x = rng.normal(size=3).astype(np.float32)

    def losses(w, x):
        z = x @ w
        return optax.softmax_cross_entropy_with_integer_labels(z, 2), -jax.nn.log_softmax(z)[2]

    def grads(w, x):
        ga = jax.grad(lambda w, x: losses(w, x)[0], argnums=(0, 1))(w, x)
        gb = jax.grad(lambda w, x: losses(w, x)[1], argnums=(0, 1))(w, x)
        return losses(w, x), ga, gb

    wb, xb = Interval(w - 0.05 * np.abs(w), w + 0.05 * np.abs(w)), box(x, 0.1)
    ws = wb.lower + wb.width * rng.uniform(size=(1000, *w.shape)).astype(np.float32)
    xs = xb.lower + xb.width * rng.uniform(size=(1000, *x.shape)).astype(np.float32)
    out, values = fast_jit(lambda *a: (interval(grads)(*a[:2]), jax.vmap(grads)(*a[2:])))(
        wb, xb, ws, xs)
    for b, v in zip(jax.tree_util.tree_leaves(out, is_leaf=is_interval),
                    jax.tree_util.tree_leaves(values), strict=True):
        assert_contains(b, v)


# -------------------------------------------------------------------------- pooling, argmax


def _pool_grad(x, weights, window, strides, padding):
    """Gradient of ``sum(max_pool(x) * weights)``: a ``select_and_scatter_add``."""
    return jax.grad(lambda x: jnp.sum(nn.max_pool(x, window, strides, padding) * weights))(x)


@pytest.mark.parametrize("strides,padding", [((2, 2), "VALID"), ((1, 1), "SAME")])
def test_max_pool_gradient_with_interval_operand(strides, padding):
    rng = np.random.default_rng(5)
    c = rng.normal(size=(1, 4, 4, 2)).astype(np.float32)
    x = box(c, 0.15)
    out_shape = nn.max_pool(c, (2, 2), strides, padding).shape
    weights = rng.normal(size=out_shape).astype(np.float32)
    f = lambda x: _pool_grad(x, weights, (2, 2), strides, padding)  # noqa: E731
    samples = np.asarray(x.lower) + np.asarray(x.width) * rng.uniform(size=(3000, *c.shape))
    out, values = fast_jit(lambda x, s: (interval(f)(x), jax.vmap(f)(s)))(
        x, samples.astype(np.float32))
    assert_contains(out, values)
    # an interval cotangent with a point operand: monotone in the cotangent, exact
    g = interval(lambda w: _pool_grad(c, w, (2, 2), strides, padding))(box(weights, 0.1))
    np.testing.assert_allclose(g.lower, _pool_grad(c, weights - 0.1, (2, 2), strides, padding)
                               if strides == (2, 2) else g.lower, rtol=1e-6)
    assert_contains(g, _pool_grad(c, weights, (2, 2), strides, padding)[None])


def test_max_pool_gradient_exact_for_separated_maxima_and_hull_for_ties():
    x = np.array([[5.0, 0.0], [0.0, 0.0]], np.float32).reshape(1, 2, 2, 1)
    w = np.full((1, 1, 1, 1), 3.0, np.float32)
    f = jax.jit(lambda x: _pool_grad(x, w, (2, 2), (2, 2), "VALID"))
    bounds = fast_jit(interval(f))
    out = bounds(box(x, 0.5))  # the maximum is certainly at (0, 0)
    np.testing.assert_array_equal(out.lower, f(x))
    np.testing.assert_array_equal(out.upper, f(x))
    tie = np.array([[1.0, 1.0], [0.0, 0.0]], np.float32).reshape(1, 2, 2, 1)
    np.testing.assert_array_equal(f(tie).ravel(), [3.0, 0.0, 0.0, 0.0])  # XLA: first maximum
    # either of the tied positions may be the maximum: each gets hull(0, 3); the rule does
    # not use the window order, so a zero-width tie gets the same (sound) hull
    first, second = tie.copy(), tie.copy()
    first[0, 0, 0, 0] += 0.05
    second[0, 0, 1, 0] += 0.05
    for width in (0.1, 0.0):
        out = bounds(box(tie, width))
        np.testing.assert_array_equal(out.lower.ravel(), [0.0, 0.0, 0.0, 0.0])
        np.testing.assert_array_equal(out.upper.ravel(), [3.0, 3.0, 0.0, 0.0])
        assert_contains(out, np.stack([f(tie), f(first), f(second)][:3 if width else 1]))


@pytest.mark.parametrize("shape,axes", [((3, 4, 2, 5, 2, 3), (2, 4)), ((5, 7), (1,)),
                                        ((2, 3, 4), (0, 2)), ((6, 1), (1,)), ((4, 3), (0, 1)),
                                        ((2, 17), (1,))])
@pytest.mark.parametrize("form", ["by_position", "by_reduction"])
def test_is_max_along_matches_its_definition(shape, axes, form, monkeypatch):
    """``u_i == max(u)`` is certain iff ``lo_i >= max_{j != i} hi_j`` and possible iff
    ``hi_i >= max_j lo_j``, ties included, in both forms of the computation (17 > the
    sliced-window limit)."""
    if form == "by_reduction":
        monkeypatch.setattr(patterns, "MAX_SLICED_WINDOW", 0)
    elif math.prod(shape[a] for a in axes) > patterns.MAX_SLICED_WINDOW:
        pytest.skip("too large a window for the sliced form")
    rng = np.random.default_rng(math.prod(shape))
    kept = [a for a in range(len(shape)) if a not in axes]
    for _ in range(10):
        lower = rng.integers(0, 4, shape).astype(np.float32)  # small integers: many ties
        upper = lower + rng.integers(0, 3, shape)
        got = patterns.is_max_along(iv(lower, upper), axes)
        # the definition, window by window, with the window flattened last
        order = kept + list(axes)
        lo = np.transpose(lower, order).reshape(-1, math.prod(shape[a] for a in axes))
        hi = np.transpose(upper, order).reshape(lo.shape)
        n = lo.shape[1]
        certain = np.stack([lo[:, i] >= np.max(np.delete(hi, i, 1), 1, initial=-np.inf)
                            for i in range(n)], 1)
        possible = hi >= lo.max(1, keepdims=True)
        for value, want in ((got.lower, certain), (got.upper, possible)):
            value = np.transpose(np.asarray(value), order).reshape(want.shape)
            np.testing.assert_array_equal(value, want)


def test_argmax_and_argmin_give_index_bounds():
    x = iv([[0.0, 2.0, 1.5, -1.0], [3.0, 0.0, 0.0, 0.0]], [[1.0, 3.0, 2.5, 0.0],
                                                          [4.0, 1.0, 1.0, 1.0]])
    out = interval(lambda x: jnp.argmax(x, axis=-1))(x)
    np.testing.assert_array_equal([out.lower, out.upper], [[1, 0], [2, 0]])
    out = interval(lambda x: jnp.argmin(x, axis=-1))(x)
    np.testing.assert_array_equal([out.lower, out.upper], [[0, 1], [3, 3]])
    # downstream use: the predicted class of an uncertain logit vector
    onehot = interval(lambda x: jax.nn.one_hot(jnp.argmax(x), 4))(
        Interval(x.lower[0], x.upper[0]))
    np.testing.assert_array_equal([onehot.lower, onehot.upper], [[0, 0, 0, 0], [0, 1, 1, 0]])


# -------------------------------------------------------------------------- failures


def test_unknown_primitives_fail_loudly_by_name():
    with pytest.raises(lb.UnsupportedPrimitiveError, match="'cumprod'"):
        interval(lax.cumprod)(iv([1.0, 2.0], [2.0, 3.0]))
    with pytest.raises(lb.UnsupportedPrimitiveError, match="'while'"):
        interval(lambda x: lax.while_loop(lambda c: c < 10.0, lambda c: c * 2.0, x))(
            iv(1.0, 2.0))
    # a while loop on points only is evaluated as usual
    out = interval(lambda x, n: x * lax.while_loop(lambda c: c < n, lambda c: c + 1, 0))(
        iv(1.0, 2.0), 3)
    np.testing.assert_array_equal([out.lower, out.upper], [3.0, 6.0])
    assert issubclass(lb.UnsupportedPrimitiveError, NotImplementedError)


# -------------------------------------------------------------------------- transformations


def _net(params, x):
    (w1, b1), (w2, b2) = params
    return jnp.tanh(x @ w1 + b1) @ w2 + b2


def _net_params(dtype=np.float32):
    rng = np.random.default_rng(6)
    return [(rng.normal(size=(3, 4)).astype(dtype), rng.normal(size=4).astype(dtype)),
            (rng.normal(size=(4, 2)).astype(dtype), rng.normal(size=2).astype(dtype))]


def test_interval_under_jit_and_vmap():
    params = _net_params()
    f = interval(jax.grad(lambda x, p: jnp.sum(jax.nn.relu(_net(p, x)))))
    xs = box(np.random.default_rng(7).normal(size=(2, 3)).astype(np.float32), 0.2)
    eager = f(Interval(xs.lower[0], xs.upper[0]), params)
    jitted = fast_jit(f)
    rows = [jitted(Interval(xs.lower[i], xs.upper[i]), params) for i in range(2)]
    batched = fast_jit(jax.vmap(f, in_axes=(0, None)))(xs, params)
    for a, b in [(eager, rows[0]), *((rows[i], jax.tree_util.tree_map(lambda v, i=i: v[i],
                                                                       batched))
                                     for i in range(2))]:
        np.testing.assert_allclose(a.lower, b.lower, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(a.upper, b.upper, rtol=1e-6, atol=1e-6)
    assert float(jnp.min(rows[1].width)) >= 0 and batched.lower.shape == (2, 3)


def test_bound_width_is_differentiable_float64():
    """``d/d(eps, x, W)`` of the total width of the output and input-gradient bounds:
    finite and equal to central finite differences (float64; directional for x and W)."""
    with jax.enable_x64(True):
        params = _net_params(np.float64)
        rng = np.random.default_rng(8)
        x0, dx = rng.normal(size=3), rng.normal(size=3)
        dp = jax.tree_util.tree_map(lambda p: rng.normal(size=p.shape), params)

        def width(eps, x, params):
            def f(x, p):
                return _net(p, x), jax.grad(lambda x: jax.nn.softplus(_net(p, x)).sum())(x)

            out, grad = interval(f)(box(x, eps), params)
            return jnp.sum(out.width) + jnp.sum(grad.width)

        def along(t, eps, x, params):  # width at (eps, x, W) + t (1, dx, dW), per direction
            shifted = jax.tree_util.tree_map(lambda p, d: p + t[2] * d, params, dp)
            return width(eps + t[0], x + t[1] * dx, shifted)

        eps, h = 0.1, 1e-6
        grads = fast_jit(jax.grad(along))(np.zeros(3), eps, x0, params)
        steps = np.eye(3) * h
        value = fast_jit(jax.vmap(along, in_axes=(0, None, None, None)))
        fd = (value(steps, eps, x0, params) - value(-steps, eps, x0, params)) / (2 * h)
        assert grads.dtype == np.float64 and np.all(np.isfinite(grads))
        assert grads[0] > 0  # a wider box, wider bounds
        np.testing.assert_allclose(grads, fd, rtol=1e-5, atol=1e-8)
        # the directional derivative is the full gradient's projection
        g_eps, g_x, g_p = fast_jit(jax.grad(width, argnums=(0, 1, 2)))(eps, x0, params)
        g_w = sum(jnp.vdot(g, d) for g, d in zip(jax.tree_util.tree_leaves(g_p),
                                                 jax.tree_util.tree_leaves(dp), strict=True))
        np.testing.assert_allclose([g_eps, jnp.vdot(g_x, dx), g_w], grads, rtol=1e-9)
