"""Explain a trained run: attributions and counterfactuals for a few images.

:func:`explanations` is a function of ``(fn, x, labels)``; :func:`explain_run` applies it to a
split of a :class:`lipxai.train.rundir.Run` (``lipxai explain``); :mod:`lipxai.apps.report`
draws the figure.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lipxai import explain
from lipxai.apps.names import DEFAULT_EXPLAIN, EXPLAIN_N
from lipxai.boundary import margin

#: What each ``lipxai explain --method`` (:data:`lipxai.apps.names.EXPLAIN_METHODS`) computes.
DESCRIPTIONS = {
    "saliency": "gradient of the predicted logit",
    "gradient_x_input": "gradient x input",
    "ig": "integrated gradients (zero baseline, 16 Gauss-Legendre steps)",
    "idgi": "IDGI (zero baseline, 16 steps)",
    "smoothgrad": "SmoothGrad (32 samples, noise 0.2)",
    "vargrad": "VarGrad (32 samples, noise 0.2)",
    "gradcam": "Grad-CAM at the last spatial layer",
    "gradcam++": "Grad-CAM++ at the last spatial layer",
    "bsm": "saliency at the closest boundary point",
    "big": "integrated gradients from the closest boundary point",
    "counterfactual": "transport counterfactual x - 1.1 m grad m / |grad m|^2",
}


def check_images(name: str, x, spec=None):
    """Check that ``x`` is a batch of images ``[B, H, W, C]`` (``B >= 1``; of the shape of the
    :class:`lipxai.data.DatasetSpec` ``spec`` when given) and return it: an image without its
    batch axis would otherwise pass as a batch of ``H`` rows."""
    shape = tuple(np.shape(x))
    expected = "[B, H, W, C]" if spec is None else f"[B, {', '.join(map(str, spec.image_shape))}]"
    if len(shape) != 4 or not shape[0] or (spec is not None and shape[1:] != spec.image_shape):
        what = "images" if spec is None else f"{spec.name} images"
        raise ValueError(f"{name} must be a batch {expected} of {what} (rank 4, B >= 1), "
                         f"got shape {shape}")
    return x


def last_spatial_layer(fn, x) -> str:
    """The path of the last layer ``fn`` calls whose output is ``[B, h, w, K]`` with ``h, w > 1``."""
    layers = [name for name, shape in explain.layer_shapes(fn, x).items()
              if len(shape) == 4 and shape[1] > 1 and shape[2] > 1]
    if not layers:
        raise ValueError("Grad-CAM needs a layer with spatial [B, h, w, K] outputs; the model has none")
    return layers[-1]


def attribute(fn, x, target, method: str, *, key, search: str = "pgd"):
    """One method of :data:`DESCRIPTIONS` on ``x``; returns ``(maps [B, H, W, ...], extra)``.

    For ``"counterfactual"`` the maps are the counterfactual images and ``extra`` their
    predicted classes; otherwise ``extra`` is ``None``.
    """
    check_images("x", x)
    if method == "saliency":
        return explain.saliency(fn, x, target), None
    if method == "gradient_x_input":
        return explain.gradient_x_input(fn, x, target), None
    if method == "ig":
        return explain.integrated_gradients(fn, x, target, steps=16), None
    if method == "idgi":
        return explain.idgi(fn, x, target, steps=16), None
    if method in ("smoothgrad", "vargrad"):
        f = explain.smoothgrad if method == "smoothgrad" else explain.vargrad
        return f(fn, x, target, key=key, samples=32, noise=0.2), None
    if method in ("gradcam", "gradcam++"):
        split = explain.split_at(fn, last_spatial_layer(fn, x))
        f = explain.grad_cam if method == "gradcam" else explain.grad_cam_plus_plus
        return f(split, x, target), None
    if method == "bsm":
        return explain.boundary_saliency(fn, x, target, search=dict(method=search)), None
    if method == "big":
        return explain.big(fn, x, target, search=dict(method=search)), None
    if method == "counterfactual":
        result = explain.counterfactual(fn, x, target, method="transport", t=1.1)
        return result.points, np.asarray(result.classes)
    raise ValueError(f"unknown method {method!r}; one of {', '.join(DESCRIPTIONS)}")


def explanations(fn, x, labels, methods=DEFAULT_EXPLAIN, *, seed: int = 0, search: str = "pgd") -> dict:
    """Attributions of ``fn``'s predicted class on the images ``x`` (floats in [0, 1]).

    Returns a dict with ``images``, ``labels``, ``predictions``, ``margins`` and, per
    method, ``maps[method]`` (and ``classes["counterfactual"]``), all numpy.  ``search``
    (one of :data:`lipxai.apps.names.SEARCHES`) is the boundary search of ``bsm`` and ``big``.
    """
    x = jnp.asarray(check_images("x", x))
    pred = jnp.argmax(fn(x), axis=1)
    out = dict(images=np.asarray(x), labels=np.asarray(labels), predictions=np.asarray(pred),
               margins=np.asarray(margin(fn, x, pred)), maps={}, classes={})
    keys = jax.random.split(jax.random.PRNGKey(seed), len(methods))
    for method, key in zip(methods, keys, strict=True):
        maps, extra = attribute(fn, x, pred, method, key=key, search=search)
        out["maps"][method] = np.asarray(maps)
        if extra is not None:
            out["classes"][method] = extra
    return out


def explain_run(run, methods=DEFAULT_EXPLAIN, *, n: int = EXPLAIN_N, split: str = "test", seed: int = 0,
                search: str = "pgd") -> dict:
    """:func:`explanations` of ``run.apply`` for the first ``n`` images of ``split``."""
    x, labels = run.split(split, n)
    return explanations(run.apply, x, labels, methods, seed=seed, search=search)
