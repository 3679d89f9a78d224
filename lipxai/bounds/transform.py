"""``interval(fun)``: interval arithmetic as a JAX function transformation.

``interval(fun)(*args)`` traces ``fun`` to a jaxpr on the shapes of ``args`` and interprets
it with one rule per primitive (:mod:`lipxai.bounds.interpreter`, the rules of
``lipxai.bounds.rules`` and ``lipxai.bounds.control``).  Arguments are pytrees whose leaves
are ``Interval`` s or plain arrays (points); a program without Interval inputs returns
exactly what ``fun`` returns.  Because the interpretation happens at trace time and every
rule is written with jax.numpy, the transformed function composes with ``jit``, ``vmap`` and
``grad`` (the bounds are differentiable functions of the box and of the weights).

Soundness (the property every rule must have): if each input lies in its interval, every
output of ``fun`` lies in the returned interval.  Comparisons return three-valued boolean
Intervals, and ``select_n`` with an uncertain predicate returns the hull of its branches, so
the ``gt``/``select_n`` pairs that ``jax.grad`` of ReLU, max and sort produce are bounded
soundly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import numpy as np

from lipxai.bounds import symbolic_interpreter
from lipxai.bounds.interpreter import eval_closed
from lipxai.bounds.interval import is_interval, unpacked


def _abstract(leaf):
    leaf = leaf.lower if is_interval(leaf) else leaf
    return jax.ShapeDtypeStruct(np.shape(leaf), jax.numpy.result_type(leaf))


#: ``method=`` of :func:`interval`: plain interval propagation, or interval propagation
#: tightened by linear bounds of the forward values in the input (``lipxai.bounds.symbolic``).
METHODS = ("ibp", "symbolic")


def interval(fun: Callable, method: str = "ibp") -> Callable:
    """Transform ``fun`` into a function that maps Interval (or point) inputs to sound bounds.

    ``interval(fun)(*args)`` has the pytree structure of ``fun(*args)``; each output leaf is
    an ``Interval`` if it depends on an Interval input and a plain array otherwise.  Example::

        lo_hi = lx.bounds.interval(jax.grad(loss))(params, lx.bounds.box(x, eps))

    bounds every gradient of ``loss`` w.r.t. ``params`` over the L_inf ball of radius ``eps``.
    Raises ``UnsupportedPrimitiveError`` (a ``NotImplementedError``) naming the primitive if
    an Interval reaches one without a rule.

    ``method="ibp"`` (default): one interval rule per primitive.  ``method="symbolic"``: the
    values that depend linearly or through ReLU/max on the input also carry linear bounds in
    the input (symbolic interval propagation with the CROWN/DeepPoly ReLU relaxation, see
    :mod:`lipxai.bounds.symbolic`), and every interval is intersected with their range; the
    backward pass of a gradient then sees fewer undecided ReLUs.  It needs the Interval
    arguments to be input boxes batched along axis 0 (examples must not interact; parameter
    boxes raise ``ValueError``) and costs memory ~ (input features) x (neurons) per example.

    A concrete Interval argument with ``lower > upper`` or a NaN bound somewhere holds no
    value, and bounds computed from it would read as certificates: it raises ``ValueError``
    naming the argument (``args[i]`` and its pytree path) and the first offending index.
    Under ``jit`` (traced bounds) this is the caller's promise.
    """
    if method not in METHODS:
        raise ValueError(f"interval: method must be one of {METHODS}, got {method!r}")

    def check_boxes(args):
        paths = jax.tree_util.tree_flatten_with_path(args, is_leaf=is_interval)[0]
        boxes = [(path, leaf) for path, leaf in paths if is_interval(leaf)
                 and not isinstance(leaf.lower, jax.core.Tracer)
                 and not isinstance(leaf.upper, jax.core.Tracer)]
        if not boxes:
            return
        # concrete boxes may reach a traced function (closed over, then called under jit):
        # their check is computed now, not staged into the trace
        with jax.ensure_compile_time_eval():
            if bool(jax.numpy.all(jax.numpy.stack(
                    [jax.numpy.all(box.lower <= box.upper) for _, box in boxes]))):
                return  # one device reduction when every box is valid
            for path, box in boxes:
                try:
                    box.check()
                except ValueError as err:
                    raise ValueError(f"interval({getattr(fun, '__name__', fun)!s}): argument "
                                     f"args{jax.tree_util.keystr(path)}: {err}") from None

    @functools.wraps(fun)
    def wrapped(*args):
        check_boxes(args)
        leaves, treedef = jax.tree_util.tree_flatten(args, is_leaf=is_interval)
        leaves = [leaf if is_interval(leaf) else jax.numpy.asarray(leaf) for leaf in leaves]

        def flat_fun(*flat):
            return fun(*jax.tree_util.tree_unflatten(treedef, flat))

        closed, out_shape = jax.make_jaxpr(flat_fun, return_shape=True)(
            *[_abstract(leaf) for leaf in leaves]
        )
        if method == "symbolic":
            outs = [unpacked(o) for o in symbolic_interpreter.eval_closed(closed, *leaves)]
        else:
            outs = eval_closed(closed, *leaves)
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), outs)

    return wrapped
