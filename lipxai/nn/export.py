"""``export``: freeze a 1-Lipschitz model into plain flax layers with precomputed weights."""

from __future__ import annotations

import flax.linen as nn
import jax

from lipxai.nn.activations import FullSort, GroupSort, Householder, MaxMin
from lipxai.nn.centering import LayerCentering
from lipxai.nn.plain import Bias, ConvResidual, DenseResidual, FourierConv
from lipxai.nn.pooling import Flatten, GlobalL2NormPool, InvertibleDownsample, L2NormPool

#: Modules that already run without iterations; ``export`` keeps them as they are.
PLAIN_MODULES = (
    nn.Dense, nn.Conv, GroupSort, FullSort, MaxMin, Householder, LayerCentering, L2NormPool,
    GlobalL2NormPool, InvertibleDownsample, Flatten, FourierConv, DenseResidual, ConvResidual, Bias,
)


def export(module, variables, *, input_shape=None):
    """Return ``(plain_module, plain_variables)`` computing the same function.

    Every reparametrised layer (Björck, power iteration, AOL, Cayley, SLL,
    centering) is replaced by a plain layer holding its effective weights, so
    inference runs no iteration and no linear solve. Handles ``nn.Sequential``
    (recursively), lipxai layers (their ``export_plain`` method) and
    parameter-free / plain modules. ``input_shape`` (e.g. ``(1, 28, 28, 1)``) is
    needed only by Cayley layers, whose frozen weights depend on the image size.
    ``"spectral"`` layers use their exact norm, as ``module.apply`` does when
    the ``"lipschitz_state"`` collection is not mutable.
    """
    if hasattr(module, "export_plain"):
        return module.export_plain(variables, input_shape)
    if isinstance(module, nn.Sequential):
        return _export_sequential(module, variables, input_shape)
    if isinstance(module, PLAIN_MODULES):
        params = variables.get("params")
        return module, ({"params": params} if params else {})
    raise TypeError(
        f"export does not know how to freeze {type(module).__name__}: build the model from "
        "lipxai.nn layers in flax.linen.Sequential, or give the module an "
        "export_plain(variables, input_shape) method")


def sequential_layers(module: nn.Sequential, variables, input_shape=None):
    """Yield ``(name, layer, layer_variables, input_shape_struct)`` for each layer of a Sequential.

    ``layer_variables`` holds the layer's slice of every collection (``layers_<i>``);
    the input shape is propagated with ``jax.eval_shape`` (``None`` throughout when
    ``input_shape`` is ``None``). Shared by :func:`export` and the Lipschitz bounds.
    """
    shape = None if input_shape is None else jax.ShapeDtypeStruct(tuple(input_shape), "float32")
    for i, layer in enumerate(module.layers):
        name = f"layers_{i}"
        sub = {col: tree[name] for col, tree in variables.items() if name in tree}
        yield name, layer, sub, shape
        if shape is not None:
            if isinstance(layer, nn.Module):
                shape = jax.eval_shape(lambda v, x, layer=layer: layer.apply(v, x), sub, shape)
            else:
                shape = jax.eval_shape(layer, shape)


def _export_sequential(module: nn.Sequential, variables, input_shape):
    layers, params = [], {}
    for name, layer, sub, shape in sequential_layers(module, variables, input_shape):
        plain = layer
        if isinstance(layer, nn.Module):
            plain, plain_vars = export(layer, sub, input_shape=None if shape is None else shape.shape)
            if plain_vars.get("params"):
                params[name] = plain_vars["params"]
        layers.append(plain)
    return nn.Sequential(layers), ({"params": params} if params else {})
