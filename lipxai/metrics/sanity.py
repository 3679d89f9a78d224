r"""Sanity checks: does the explanation depend on the model's parameters and on the class?

An explanation that survives the randomisation of the model, or that is the same for every
class, explains the input rather than the model (Adebayo et al. 2018).  Both checks compare
explanations with a similarity measure of :mod:`lipxai.metrics.similarity` (``"ssim"``,
``"spearman"``, ``"pearson"``, ``"mse"``, ``"center_of_mass_shift"``) or any
``similarity(a, b) -> float[B]``; a low similarity passes the check.

* :func:`model_randomization` takes ``explain_fn(params, x, target) -> attributions``: the
  explanation as a function of the model's parameters (e.g. ``lambda p, x, t:
  lipxai.explain.saliency(lambda z: model.apply({"params": p}, z), x, t)``), so that a
  randomised model is just another parameter pytree; it returns a :class:`Randomization`
  ``(scores: float[L, B], layers: tuple[str, ...])``, one row per randomisation step.
* :func:`random_logit` takes ``explain_fn(x, target)``, as the robustness metrics.

Before comparing, each explanation is optionally divided by its maximum ``|a|`` (per
example; ``normalise``) and replaced by its absolute value (``absolute``), as Quantus'
pre-processing (``normalise_by_max`` then ``abs``).

NaN rule (:mod:`lipxai.metrics`): an example whose input or one of whose explanations holds
a NaN or an infinity scores NaN, so does one whose target ``explain_fn`` marks invalid with
a NaN explanation (as :mod:`lipxai.explain` does for a target out of range under ``jit``)
and, in :func:`random_logit`, one whose target is not in ``[0, num_classes)``.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from lipxai._core.batched import flat
from lipxai._core.checks import (
    finite_examples,
    floating_array,
    in_range,
    labels_for,
    nan_unless,
    non_empty,
    one_of,
    positive_int,
)
from lipxai.metrics import similarity as sim
from lipxai.metrics._common import (
    check_explain_fn,
    check_key,
    chunk_of,
    chunked,
    finite_in,
    map_shape,
    normalised,
)

__all__ = ["Randomization", "layer_names", "model_randomization", "random_logit"]

ORDERS = ("top_down", "bottom_up", "independent")

# traced similarity measures (inputs already validated)
_SIMILARITY = {
    "ssim": lambda a, b: sim.ssim_unchecked(a, b, jnp.zeros((), a.dtype), win_size=7,
                                    auto_range=True),
    "spearman": lambda a, b: sim.spearman_unchecked(a, b, features="pixels"),
    "pearson": lambda a, b: sim.pearson_unchecked(a, b, features="pixels"),
    "mse": lambda a, b: sim.mse_unchecked(a, b, features="pixels"),
    "center_of_mass_shift": sim.center_of_mass_shift_unchecked,
}


def _similarity_fn(similarity, x_shape):
    if callable(similarity):
        return similarity
    one_of("similarity", similarity, tuple(_SIMILARITY))
    if similarity == "ssim":
        side = min(map_shape(x_shape))
        if side < 7:
            raise ValueError(f"similarity='ssim' needs pixel maps of side >= 7 (its window), "
                             f"got map shape {map_shape(x_shape)}")
    return _SIMILARITY[similarity]


# ---------------------------------------------------------------------------------------
# layers of a parameter pytree
# ---------------------------------------------------------------------------------------


def _key_str(k):
    for attr in ("key", "idx", "name"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _flatten(params):
    """``[(path, leaf)]`` in JAX's flattening order (dict keys sorted) and the treedef."""
    items, treedef = jax.tree_util.tree_flatten_with_path(params)
    return [(tuple(_key_str(k) for k in path), leaf) for path, leaf in items], treedef


def _is_float(leaf):
    return hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating)


def _layer_of(path):
    return "/".join(path[:-1]) if len(path) > 1 else "/".join(path)


def layer_names(params) -> tuple[str, ...]:
    """The layers of ``params``: the paths (``"/"``-joined keys, e.g. ``"params/Dense_0"``)
    of the nodes that hold floating leaves (a floating leaf at the top level is its own
    layer), in JAX's flattening order (dict keys sorted, as after any JAX transformation).
    :func:`model_randomization` randomises them in the order in which the model *uses*
    them."""
    names = []
    for path, leaf in _flatten(params)[0]:
        name = _layer_of(path)
        if _is_float(leaf) and name not in names:
            names.append(name)
    return tuple(names)


def _sub_jaxprs(eqn):
    for v in eqn.params.values():
        if isinstance(v, jcore.ClosedJaxpr):
            yield v.jaxpr
        elif isinstance(v, jcore.Jaxpr):
            yield v


def _first_uses(jaxpr, n):
    """``first[i]``: the position (equations counted depth first) of the first equation of
    ``jaxpr`` that reads its ``i``-th input, for the first ``n`` inputs (``inf`` if unused).
    Sub-jaxprs whose inputs match the equation's operands one to one (``jit``, custom
    derivatives, ``remat``) are followed; others (loops, conditionals) count as one
    equation."""
    first = [np.inf] * n
    count = [0]

    def walk(jx, env):
        for eqn in jx.eqns:
            count[0] += 1
            idx = [None if isinstance(v, jcore.Literal) else env.get(v) for v in eqn.invars]
            if all(i is None for i in idx):
                continue
            subs = [sj for sj in _sub_jaxprs(eqn) if len(sj.invars) == len(eqn.invars)]
            if subs:
                for sj in subs:
                    walk(sj, {v: i for v, i in zip(sj.invars, idx, strict=True)
                              if i is not None})
            else:
                for i in idx:
                    if i is not None:
                        first[i] = min(first[i], count[0])

    walk(jaxpr, {v: i for i, v in enumerate(jaxpr.invars[:n])})
    return first


def _traced(explain_fn, params, x, target):
    """``explain_fn``'s output shape and, per layer, the position of its first use in the
    jaxpr of ``explain_fn(params, x, target)``."""
    items, treedef = _flatten(params)
    leaves = [leaf for _, leaf in items]
    closed, out = jax.make_jaxpr(
        lambda ls, z, t: explain_fn(jax.tree_util.tree_unflatten(treedef, ls), z, t),
        return_shape=True)(leaves, jax.ShapeDtypeStruct(x.shape, x.dtype),
                           jax.ShapeDtypeStruct(target.shape, target.dtype))
    use: dict[str, float] = {}
    for (path, _), f in zip(items, _first_uses(closed.jaxpr, len(leaves)), strict=True):
        use[_layer_of(path)] = min(use.get(_layer_of(path), np.inf), f)
    return out, use


def _replace(params, new):
    """A copy of ``params`` with the leaves at the paths in ``new`` replaced."""
    items, treedef = _flatten(params)
    return jax.tree_util.tree_unflatten(treedef, [new.get(p, leaf) for p, leaf in items])


@jax.jit
def _std_normal(keys, leaves):
    """``std(w) * N(0, 1)`` for every leaf ``w`` (one compilation per parameter structure)."""
    return [(jnp.std(w) * jax.random.normal(k, w.shape, w.dtype)).astype(w.dtype)
            for k, w in zip(keys, leaves, strict=True)]


def _path_key(key, path):
    """The key of the leaf at ``path``: ``key`` folded with the CRC-32 of each path entry, so
    that a draw depends on the leaf's path only."""
    for part in path:
        key = jax.random.fold_in(key, zlib.crc32(part.encode()))
    return key


def _random_leaves(params, names, key, init):
    """``{path: random leaf}`` for every floating leaf of the layers ``names``."""
    items = [(path, leaf) for path, leaf in _flatten(params)[0] if _is_float(leaf)]
    keys = [_path_key(key, path) for path, _ in items]
    leaves = [leaf for _, leaf in items]
    keep = [_layer_of(path) in names for path, _ in items]
    if init is None:  # every layer drawn: one compilation whatever ``names``
        new = _std_normal(keys, leaves)
    else:
        new = [init(k, w) if use else w for k, w, use in zip(keys, leaves, keep, strict=True)]
    out = {}
    for (path, leaf), w, use in zip(items, new, keep, strict=True):
        if not use:
            continue
        if tuple(jnp.shape(w)) != tuple(leaf.shape):
            raise ValueError(f"init must return an array of the leaf's shape "
                             f"{tuple(leaf.shape)} ({'/'.join(path)}), got "
                             f"{tuple(jnp.shape(w))}")
        out[path] = jnp.asarray(w, leaf.dtype)
    return out


# ---------------------------------------------------------------------------------------
# model parameter randomisation
# ---------------------------------------------------------------------------------------


class Randomization(NamedTuple):
    """Result of :func:`model_randomization`.

    Attributes:
      scores: ``float[L, B]``; ``scores[l, i]`` is the similarity between example ``i``'s
        explanation by the original model and by the model of step ``l``.
      layers: the ``L`` layer names, in the order of the steps (``layers[l]`` is the layer
        randomised at step ``l``; cascading orders keep the earlier ones randomised).
    """

    scores: jax.Array
    layers: tuple[str, ...]


@functools.partial(jax.jit, static_argnames=("explain_fn", "normalise", "absolute"))
def _explain(explain_fn, params, x, target, *, normalise, absolute):
    return normalised(explain_fn(params, x, target), normalise, absolute)


@functools.partial(jax.jit, static_argnames=("explain_fn", "similarity", "normalise",
                                             "absolute"))
def _compare(explain_fn, params, x, target, a0, *, similarity, normalise, absolute):
    a = normalised(explain_fn(params, x, target), normalise, absolute)
    return nan_unless(finite_in(x, a0, a), similarity(a0, a))


def model_randomization(explain_fn, params, x, target, *, key, order: str = "top_down",
                        similarity="spearman", layers: Sequence[str] | None = None,
                        init=None, normalise: bool = True,
                        absolute: bool = True) -> Randomization:
    r"""Model parameter randomisation test: the similarity between the explanation of the
    trained model and the explanations of models whose layers are re-initialised one after
    the other,

    .. math:: s_{l,i} = \mathrm{sim}\big(e(\theta, x_i), e(\tilde\theta_l, x_i)\big),

    where :math:`\tilde\theta_l` randomises the layers :math:`\pi_1..\pi_l` (``top_down``:
    :math:`\pi` runs from the output layer to the input layer, Adebayo et al.'s cascading
    randomisation; ``bottom_up``: from the input) or the layer :math:`\pi_l` alone
    (``independent``).  Adebayo et al. 2018, "Sanity checks for saliency maps" (NeurIPS);
    Quantus' ``MPRT`` (defaults: ``top_down``, Spearman, ``normalise``, ``absolute``).
    An explanation that is sensitive to the parameters, as it should be, has a similarity
    that drops well below the original 1.

    Layers are the nodes of ``params`` that hold floating leaves (:func:`layer_names`, e.g.
    ``"params/Conv_0"``, ``"params/Dense_0"`` for Flax); non-floating leaves never change.
    Their input-to-output order is read from the computation, not from the names or the
    dict order (JAX sorts dict keys whenever a pytree goes through a transformation, and
    Flax names count per module type): layers are sorted by the first equation that reads
    one of their leaves in the jaxpr of ``explain_fn(params, x, target)``, whose forward pass
    comes first (calls of ``jit``, custom derivatives and ``remat`` are followed inside; a
    layer used only inside a loop or a conditional counts at that equation; layers the
    explanation never reads come last, ties keep :func:`layer_names`' order).  ``top_down``
    reverses that order.

    Randomisation.  Each floating leaf :math:`w` of a layer is replaced by
    :math:`\operatorname{std}(w)\, z`, :math:`z \sim \mathcal N(0, \mathrm{Id})`: a random
    draw at the scale of the trained parameter, whatever the library or initialiser that
    built the model.  Quantus instead re-runs the layer's own initialiser
    (``reset_parameters``), which needs to know the initialiser; pass ``init(key, leaf) ->
    array`` to do the same (e.g. ``lambda k, w: flax.linen.initializers.lecun_normal()(k,
    w.shape, w.dtype)``).  A constant leaf (zero biases) stays constant with the default.
    The draw of a leaf uses ``key`` folded with the CRC-32 of each entry of its path: every
    order, every subset of ``layers``, and a call under ``jax.jit`` use the same random
    values for a given layer.

    The original explanation and each step's are computed by ``jax.jit``\ s with
    ``explain_fn`` static, compiled once for all the steps (the randomised pytrees have the
    original's structure); the draws are made outside them.  Scores are per example:
    ``explain_fn`` must explain the examples independently.

    Args:
      explain_fn: ``explain_fn(params, x, target) -> attributions`` shaped like ``x``.
      params: the trained model's parameter pytree (pass the trainable collection only,
        e.g. ``variables["params"]``, and close ``explain_fn`` over batch statistics).
      x: floating inputs ``[B, ...]``.
      target: ``int[B]``, the explained classes.
      key: ``jax.random`` key.
      order: ``"top_down"`` (default), ``"bottom_up"`` or ``"independent"``.
      similarity: a name of :mod:`lipxai.metrics.similarity` (``"spearman"`` default, as
        Quantus; ``"ssim"`` with its defaults, ``"pearson"``, ``"mse"``,
        ``"center_of_mass_shift"``) or a traceable ``similarity(a, b) -> float[B]``, e.g.
        ``functools.partial(lipxai.metrics.similarity.top_k_intersection, k=10)`` (pass the
        same object to reuse the compilation); ``"mse"`` and the shift are distances.
      layers: the layers to randomise, a subset of :func:`layer_names` in any order (they
        are randomised in the model's order; ``None``: all of them).
      init: ``init(key, leaf) -> array`` of the leaf's shape, replacing the default draw.
      normalise, absolute: divide each explanation by its maximum ``|a|`` / take ``|a|``
        before comparing (both on by default, as Quantus' MPRT).

    Returns:
      :class:`Randomization` ``(scores: float[L, B], layers: tuple[str, ...])``; NaN in the
      column of an invalid example (module docstring).
    """
    if not callable(explain_fn):
        raise TypeError(f"explain_fn must be callable, got {type(explain_fn).__name__}")
    x = non_empty("x", floating_array("x", x, min_rank=2))
    target = labels_for("target", target, np.iinfo(np.int32).max, x.shape[0])
    check_key(key)
    one_of("order", order, ORDERS)
    sim = _similarity_fn(similarity, x.shape)
    if init is not None and not callable(init):
        raise TypeError(f"init must be callable or None, got {type(init).__name__}")
    all_names = layer_names(params)
    if not all_names:
        raise ValueError("params has no floating leaves to randomise")
    if layers is not None:
        if isinstance(layers, str):
            raise TypeError("layers must be a sequence of layer names, got a string")
        layers = list(layers)
        if (not layers or len(set(layers)) != len(layers)
                or any(n not in all_names for n in layers)):
            raise ValueError(f"layers must be distinct names among {list(all_names)}, "
                             f"got {layers}")
    out, use = _traced(explain_fn, params, x, target)
    if tuple(getattr(out, "shape", ())) != tuple(x.shape):
        raise ValueError(
            f"explain_fn(params, x, target) must return attributions of x's shape "
            f"{tuple(x.shape)}, got {getattr(out, 'shape', type(out).__name__)}")
    # input to output: by first use in the jaxpr (the forward pass comes first); layers
    # the explanation never reads go last
    names = sorted(layers if layers is not None else all_names,
                   key=lambda n: (use[n], all_names.index(n)))
    if order == "top_down":
        names = names[::-1]
    normalise, absolute = bool(normalise), bool(absolute)

    random = _random_leaves(params, names, key, init)
    a0 = _explain(explain_fn, params, x, target, normalise=normalise, absolute=absolute)
    scores = []
    for step, name in enumerate(names):
        done = [name] if order == "independent" else names[: step + 1]
        new = {p: v for p, v in random.items() if _layer_of(p) in done}
        p_step = _replace(params, new)
        scores.append(_compare(explain_fn, p_step, x, target, a0, similarity=sim,
                               normalise=normalise, absolute=absolute))
    return Randomization(jnp.stack(scores), tuple(names))


# ---------------------------------------------------------------------------------------
# random logit
# ---------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("samples",))
def _offsets(key, num_classes, *, samples):
    keys = jax.random.split(key, samples)
    return jax.vmap(lambda k: jax.random.randint(k, (), 1, num_classes))(keys)


@functools.partial(jax.jit, static_argnames=("explain_fn", "similarity", "normalise",
                                             "absolute", "chunk"))
def _random_logit(explain_fn, x, target, offsets, num_classes, *, similarity, normalise,
                  absolute, chunk):
    b = x.shape[0]
    a0 = normalised(explain_fn(x, target), normalise, absolute)
    valid = finite_in(x, a0) & in_range(target, num_classes)
    samples = offsets.shape[0]

    def chunk_fn(idx):
        c = idx.shape[0]
        other = (target[None] + offsets[idx][:, None]) % num_classes  # [c, B]
        z = jnp.broadcast_to(x[None], (c,) + x.shape)
        a = normalised(explain_fn(flat(z), other.reshape(-1)), normalise, absolute)
        a0c = jnp.broadcast_to(a0[None], (c,) + a0.shape)
        return nan_unless(finite_examples(a), similarity(flat(a0c), a)).reshape(c, b).sum(0)

    return nan_unless(valid, chunked(chunk_fn, samples, chunk, "sum") / samples)


def random_logit(explain_fn, x, target, *, key, num_classes: int, similarity="ssim",
                 samples: int = 1, normalise: bool = True, absolute: bool = False,
                 batch_size: int | None = None):
    r"""Random logit test: the similarity between the explanation of the target class and
    the explanation of a uniformly drawn *other* class,

    .. math:: \mathrm{RL}(x) = \frac1S \sum_{s=1}^S \mathrm{sim}\big(e(x, y), e(x, y'_s)\big),
              \qquad y'_s \sim \mathcal U(\{0..C-1\} \setminus \{y\}).

    Sixt, Granz & Landgraf 2020, "When explanations lie: why many modified BP attributions
    fail" (ICML); Quantus' ``RandomLogit`` (defaults: SSIM, ``normalise=True``,
    ``absolute=False``, one draw).  Class-sensitive explanations give a low similarity.

    Draw ``s`` is :math:`y'_s = (y + o_s) \bmod C` with :math:`o_s \sim \mathcal U\{1..C-1\}`
    from ``jax.random.split(key, samples)[s]``, the offset shared by the examples (each
    example's other class is uniform; scores do not depend on the batch nor on
    ``batch_size``).  The ``samples`` explanations are computed in chunks of
    ``batch_size`` draws (``batch_size * B`` examples per call of ``explain_fn``).

    Deviation from Quantus: ``"ssim"`` compares the 2-D pixel maps (channels summed), where
    Quantus' ``RandomLogit`` applies skimage's SSIM to the flattened attributions (a 1-D
    signal); Quantus' ``normalise_by_max`` divides by the batch's maximum, here each
    example's.

    Args:
      explain_fn: batched ``explain_fn(x, target) -> attributions`` shaped like ``x``.
      x: floating inputs ``[B, ...]``.
      target: ``int[B]`` in ``[0, num_classes)``.
      key: ``jax.random`` key.
      num_classes: :math:`C \ge 2`.
      similarity: as :func:`model_randomization` (default ``"ssim"``, as Quantus).
      samples: number of random classes averaged, ``>= 1``.
      normalise, absolute: as :func:`model_randomization` (defaults: True, False).
      batch_size: draws evaluated together per chunk (``None``:
        :func:`lipxai.explain.default_chunk`).

    Returns:
      ``float[B]``; NaN for an invalid example (module docstring).
    """
    num_classes = positive_int("num_classes", num_classes, minimum=2)
    x, target = check_explain_fn(explain_fn, x, target)
    labels_for("target", target, num_classes, x.shape[0])
    check_key(key)
    samples = positive_int("samples", samples)
    sim = _similarity_fn(similarity, x.shape)
    chunk = chunk_of(batch_size, samples, x.shape)
    offsets = _offsets(key, jnp.asarray(num_classes, jnp.int32), samples=samples)
    return _random_logit(explain_fn, x, target, offsets, jnp.asarray(num_classes, jnp.int32),
                         similarity=sim, normalise=bool(normalise), absolute=bool(absolute),
                         chunk=chunk)
