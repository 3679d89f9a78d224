"""lipxai.nn.max_pool: flax.linen.max_pool's output and gradient, ties included."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lipxai.nn import export, max_pool, pooling, zoo

# (shape, window, strides, padding); the first ones take the reshape path, the last ones fall
# back to flax (overlapping windows, stride 1 by default)
FAST = [
    ((2, 8, 6, 3), (2, 2), (2, 2), "VALID"),
    ((2, 7, 9, 3), (2, 2), (2, 2), "VALID"),  # odd sizes: the remainder is cropped
    ((2, 7, 9, 3), (2, 2), (2, 2), "SAME"),  # odd sizes: padded with -inf
    ((2, 7, 9, 3), (3, 3), (3, 3), "SAME"),
    ((2, 7, 9, 3), (2, 3), (2, 3), ((1, 0), (2, 1))),
    ((7, 9, 3), (2, 2), (2, 2), "VALID"),  # no batch dimension
    ((2, 3, 7, 9, 3), (2, 2), (2, 2), "VALID"),  # two batch dimensions
    ((2, 11, 3), (3,), (3,), "SAME"),  # 1-d
    ((2, 5, 6, 7, 2), (2, 3, 2), (2, 3, 2), "VALID"),  # 3-d
    ((2, 10, 8, 2), (5, 4), (5, 4), "VALID"),  # 20-element windows
]
FALLBACK = [
    ((2, 8, 6, 3), (3, 3), (2, 2), "VALID"),
    ((2, 8, 6, 3), (2, 2), None, "SAME"),
    ((2, 9, 3), (2,), (1,), "VALID"),
]
CASES = FAST + FALLBACK


def _pair(case):
    _, window, strides, padding = case
    return (lambda a: nn.max_pool(a, window, strides, padding),
            lambda a: max_pool(a, window, strides, padding))


def _normal(seed, shape):
    # numpy draws: eager jax.random calls would compile a sampler for every shape
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _ties(seed, shape):
    """Integer-valued floats in [-2, 2] (ties in most windows, no -0.0)."""
    return jnp.asarray(np.random.default_rng(seed).integers(-2, 3, shape), jnp.float32)


def _check_same(case, inputs):
    """Output, gradient and JVP of flax's and lipxai's max_pool agree on ``inputs``.

    ``inputs``: ``(x, ties)`` pairs of one shape (one compilation for all of them).
    """
    ref, fast = _pair(case)

    @jax.jit
    def both(x, g, t):
        out = []
        for f in (ref, fast):
            y, vjp = jax.vjp(f, x)
            out.append((y, vjp(g)[0], jax.jvp(f, (x,), (t,))[1]))
        jac = jax.vmap(lambda e: jax.vjp(ref, x)[1](e)[0])(
            jnp.eye(g.size).reshape((-1,) + g.shape))
        return out, jac.reshape(g.size, -1) @ t.ravel()

    g, t = _normal(11, jax.eval_shape(ref, inputs[0][0]).shape), _normal(12, case[0])
    for x, ties in inputs:
        ((y0, grad0, jvp0), (y1, grad1, jvp1)), jac_t = both(x, g, t)
        assert y1.shape == y0.shape and y1.dtype == y0.dtype
        np.testing.assert_array_equal(np.asarray(y1), np.asarray(y0))
        np.testing.assert_array_equal(np.asarray(grad1), np.asarray(grad0))
        if not ties:
            np.testing.assert_array_equal(np.asarray(jvp1), np.asarray(jvp0))
        elif case in FAST:
            # flax's own JVP (select_and_gather_add) may pick another tied element than its
            # gradient when windows are padded; ours is the exact transpose of the gradient
            np.testing.assert_array_equal(np.asarray(jvp1).ravel(), np.asarray(jac_t))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_output_and_gradients_equal_flax(case):
    """Tie-free inputs, and integer-valued ones (ties: the gradient of each window goes to
    the same single element as flax's)."""
    _check_same(case, [(_normal(0, case[0]), False), (_ties(1, case[0]), True)])


@pytest.mark.parametrize("case", FAST[:3], ids=str)
def test_element_by_element_and_index_masks_agree(case, monkeypatch):
    monkeypatch.setattr(pooling, "_SEQUENTIAL_MASK_MAX", 0)  # force the min-index mask
    _check_same(case, [(_ties(2, case[0]), True)])


def test_tie_gradient_goes_to_the_first_maximum():
    # each 2x2 window in row-major order; the gradient of a window goes to one element only
    x = jnp.array([[1.0, 1.0, 0.0, 3.0],
                   [1.0, 1.0, 3.0, 3.0],
                   [-jnp.inf, -jnp.inf, 2.0, 5.0],
                   [-jnp.inf, -jnp.inf, 5.0, 5.0]])[None, :, :, None]
    grad = jax.jit(jax.grad(lambda a: max_pool(a, (2, 2), (2, 2)).sum()))(x)[0, :, :, 0]
    expected = np.array([[1, 0, 0, 1], [0, 0, 0, 0], [1, 0, 0, 1], [0, 0, 0, 0]], np.float32)
    np.testing.assert_array_equal(np.asarray(grad), expected)
    # jnp.max would split the tie instead
    split = jax.jit(jax.grad(lambda a: a.reshape(1, 2, 2, 2, 2, 1).max(axis=(2, 4)).sum()))(x)
    assert float(split[0, 0, 0, 0]) == 0.25


def test_nan_window():
    x = jnp.array([[1.0, jnp.nan], [jnp.nan, 2.0]])[None, :, :, None]
    y, grad = jax.jit(jax.value_and_grad(lambda a: max_pool(a, (2, 2), (2, 2)).sum()))(x)
    assert bool(jnp.isnan(y))
    np.testing.assert_array_equal(np.asarray(grad).ravel(), [0, 1, 0, 0])


def test_jit_vmap_and_second_order():
    case = FAST[1]
    ref, fast = _pair(case)
    x = _normal(3, (3,) + case[0])
    v = _normal(4, x.shape)
    square = lambda f: jax.grad(lambda a: (f(a) ** 2).sum())

    def everything(f):
        # vmap of the output and of the gradient; forward over reverse (Hessian-vector
        # products) through the custom JVP
        hvp = jax.vmap(lambda a, b: jax.jvp(square(f), (a,), (b,))[1])(x, v)
        return jax.vmap(f)(x), jax.vmap(square(f))(x), hvp

    fast_out, ref_out = jax.jit(lambda: everything(fast))(), jax.jit(lambda: everything(ref))()
    for got, want in zip(fast_out, ref_out, strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6)


def _primitives(f, x):
    return {str(e.primitive) for e in jax.make_jaxpr(jax.grad(lambda a: f(a).sum()))(x).eqns}


def test_fast_path_avoids_reduce_window():
    x = jnp.ones((2, 8, 8, 3))
    ref, fast = _pair(FAST[0])
    prims = _primitives(fast, x)
    assert not any("reduce_window" in p or "select_and" in p for p in prims), prims
    assert any("reduce_window" in p for p in _primitives(ref, x))
    _, fallback = _pair(FALLBACK[0])
    assert any("reduce_window" in p for p in _primitives(fallback, x))


def test_integer_input_falls_back():
    x = jnp.arange(2 * 4 * 4 * 1, dtype=jnp.int32).reshape(2, 4, 4, 1)
    np.testing.assert_array_equal(np.asarray(max_pool(x.astype(jnp.float32), (2, 2), (2, 2))),
                                  np.asarray(nn.max_pool(x.astype(jnp.float32), (2, 2), (2, 2))))
    assert pooling._fast_pool_padding("VALID", (4, 4), (2, 2), (2, 2)) == [(0, 0), (0, 0)]
    assert pooling._fast_pool_padding("VALID", (4, 4), (3, 3), (2, 2)) is None


def test_unconstrained_cnn_uses_it():
    model = zoo.unconstrained_cnn(channels=(4,), dense=(8,))
    x = jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.key(0), x)
    grad = jax.grad(lambda p, a: model.apply(p, a).sum(), argnums=1)
    prims = {str(e.primitive) for e in jax.make_jaxpr(grad)(params, x).eqns}
    assert not any("select_and" in p or "reduce_window" in p for p in prims), prims


def test_unconstrained_cnn_exports_as_itself_with_the_same_outputs():
    model = zoo.unconstrained_cnn(channels=(4,), dense=(8,))
    x = jax.random.uniform(jax.random.key(1), (2, 8, 8, 1))
    variables = model.init(jax.random.key(0), x)
    plain, plain_variables = export(model, variables, input_shape=(1, 8, 8, 1))
    assert plain is model
    assert jnp.array_equal(plain.apply(plain_variables, x), model.apply(variables, x))
