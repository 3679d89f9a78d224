"""Class activation maps from gradients: Grad-CAM and Grad-CAM++.

Both explain a *layer* rather than the input, so the model is given split at that layer
as a pair ``(features, head)``:

* ``features(x) -> a``: the layer's activations ``[B, h, w, K]`` (channels last);
* ``head(x, a) -> logits``: the logits when the layer's output is replaced by ``a``.

Any pair with ``head(x, features(x)) == fn(x)`` works (two hand-written halves of a
network, say).  :func:`split_at` builds it for any function that runs flax linen modules,
by intercepting the named submodule's ``__call__`` (``flax.linen.intercept_methods``);
:func:`layer_shapes` lists the submodules a function calls and their output shapes.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lipxai._core.checks import (
    finite_examples,
    floating_array,
    in_range,
    labels_for,
    nan_unless,
    non_empty,
)

__all__ = ["grad_cam", "grad_cam_plus_plus", "layer_shapes", "split_at"]


def _path_name(module) -> str:
    return "/".join(module.path)


def layer_shapes(apply, x) -> dict[str, tuple[int, ...]]:
    """``{path: output shape}`` of every flax submodule that ``apply(x)`` calls, in the order
    the calls return (a nested submodule before its parent; paths are joined with ``/``,
    e.g. ``"layers_3"`` in a ``Sequential``)."""
    x = floating_array("x", x, min_rank=2)
    shapes: dict[str, tuple[int, ...]] = {}

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and context.module.path:
            shapes.setdefault(_path_name(context.module), tuple(getattr(out, "shape", ())))
        return out

    def run(z):
        with nn.intercept_methods(record):
            return apply(z)

    jax.eval_shape(run, jax.ShapeDtypeStruct(x.shape, x.dtype))
    return shapes


def split_at(apply, layer: str):
    """Split ``apply`` (a function running flax linen modules) at the submodule ``layer``.

    Args:
      apply: ``x -> logits``, e.g. ``functools.partial(model.apply, variables)`` or
        ``run.apply`` of a lipxai run.
      layer: the submodule's path, parts joined with ``/`` (see :func:`layer_shapes`).

    Returns:
      ``(features, head)``: ``features(x)`` is the layer's output; ``head(x, a)`` runs
      ``apply(x)`` with that output replaced by ``a`` (under ``jit`` XLA drops the unused
      computation before the layer).  Calling either raises ``ValueError`` naming the
      available layers if ``layer`` is not called exactly once.
    """
    if not isinstance(layer, str) or not layer:
        raise ValueError(f"layer must be a submodule path such as 'layers_3', got {layer!r}")

    def intercepted(x, replace):
        outputs, available = [], []

        def hook(next_fun, args, kwargs, context):
            if context.method_name != "__call__" or not context.module.path:
                return next_fun(*args, **kwargs)
            name = _path_name(context.module)
            available.append(name)
            if name != layer:
                return next_fun(*args, **kwargs)
            out = next_fun(*args, **kwargs) if replace is None else replace
            outputs.append(out)
            return out

        with nn.intercept_methods(hook):
            logits = apply(x)
        if len(outputs) != 1:
            raise ValueError(
                f"layer {layer!r} must be called exactly once by apply, it was called "
                f"{len(outputs)} times; layers: {sorted(set(available))}")
        return logits, outputs[0]

    def features(x):
        return intercepted(x, None)[1]

    def head(x, a):
        return intercepted(x, a)[0]

    return features, head


def _layer_gradients(split, x, target):
    """Validate; return ``(x, a, g, valid)``: the activations ``a [B, h, w, K]``, ``g = d
    logit_t / d a`` and the examples with a finite input and a target in range."""
    if not (isinstance(split, tuple) and len(split) == 2 and all(map(callable, split))):
        raise TypeError("split must be a pair (features, head) of callables; build it with "
                        "lipxai.explain.split_at(apply, layer)")
    features, head = split
    x = non_empty("x", floating_array("x", x, min_rank=2))
    a = features(x)
    if a.ndim != 4 or a.shape[0] != x.shape[0]:
        raise ValueError(f"features(x) must be [B, h, w, K] activations (channels last) with "
                         f"B = {x.shape[0]}, got shape {tuple(a.shape)}")
    out = jax.eval_shape(head, x, a)
    if len(out.shape) != 2 or out.shape[0] != x.shape[0]:
        raise ValueError(f"head(x, a) must return logits [B, C], got shape {tuple(out.shape)}")
    target = labels_for("target", target, out.shape[1], x.shape[0])

    def total(act):
        logits = head(x, act)
        return jnp.take_along_axis(logits, target[:, None].astype(jnp.int32), axis=1).sum()

    valid = finite_examples(x) & in_range(target, out.shape[1])
    return x, a, jax.grad(total)(a), valid


def _finish(cam, x, relu, upsample):
    """``relu`` then bilinear resize of ``cam [B, h, w]`` to ``x``'s spatial size."""
    cam = jax.nn.relu(cam) if relu else cam
    if upsample:
        if x.ndim != 4:
            raise ValueError(f"upsample=True needs NHWC images x, got shape {tuple(x.shape)}")
        cam = jax.image.resize(cam, (cam.shape[0],) + tuple(x.shape[1:3]), method="bilinear")
    return cam[..., None]


def grad_cam(split, x, target, *, relu: bool = True, upsample: bool = True):
    r"""Grad-CAM: :math:`\mathrm{ReLU}(\sum_k w_k A_k)` with
    :math:`w_k = \frac{1}{hw}\sum_{ij} \partial f_t / \partial A_{ijk}`.

    Selvaraju et al. 2017, "Grad-CAM: visual explanations from deep networks via
    gradient-based localization".  Captum's ``LayerGradCam`` (with
    ``relu_attributions=True``) followed by ``LayerAttribution.interpolate(...,
    "bilinear")`` computes the same map.

    Args:
      split: ``(features, head)``, see :func:`split_at`.
      x: inputs ``[B, ...]`` (NHWC images when ``upsample``).
      target: ``int[B]``.
      relu: apply the ReLU of the paper (Captum's default is not to).
      upsample: resize the ``h x w`` map bilinearly to the input's ``H x W``.

    Returns:
      ``[B, H, W, 1]`` (``[B, h, w, 1]`` without ``upsample``), broadcastable to NHWC ``x``;
      NaN for an invalid example (:mod:`lipxai.explain`).
    """
    x, a, g, valid = _layer_gradients(split, x, target)
    weights = g.mean(axis=(1, 2), keepdims=True)
    return nan_unless(valid, _finish((weights * a).sum(-1), x, relu, upsample))


def grad_cam_plus_plus(split, x, target, *, relu: bool = True, upsample: bool = True):
    r"""Grad-CAM++: :math:`\mathrm{ReLU}(\sum_k w_k A_k)` with pixel-weighted gradients

    .. math:: w_k = \sum_{ij} \alpha^k_{ij}\,\mathrm{ReLU}(g^k_{ij}),\qquad
              \alpha^k_{ij} = \frac{(g^k_{ij})^2}
              {2 (g^k_{ij})^2 + \sum_{ab} A^k_{ab} (g^k_{ij})^3}

    (:math:`\alpha = 0` where :math:`g = 0`), the closed form of Chattopadhyay et al. 2018,
    "Grad-CAM++: improved visual explanations for deep convolutional networks", for an
    exponentiated score (higher derivatives as powers of the first), as in their code.
    Arguments and shape as :func:`grad_cam`.
    """
    x, a, g, valid = _layer_gradients(split, x, target)
    g2 = g * g
    denom = 2 * g2 + a.sum(axis=(1, 2), keepdims=True) * g2 * g
    safe = jnp.where(denom != 0, denom, 1)
    alpha = jnp.where((g != 0) & (denom != 0), g2 / safe, 0)
    weights = (alpha * jax.nn.relu(g)).sum(axis=(1, 2), keepdims=True)
    return nan_unless(valid, _finish((weights * a).sum(-1), x, relu, upsample))
