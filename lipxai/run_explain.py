"""Explain a trained run: attributions and counterfactuals for a few test images, as a figure."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lipxai import data, explain
from lipxai.boundary import margin
from lipxai.cli import DEFAULT_EXPLAIN as DEFAULT_METHODS
from lipxai.nn import export

#: ``lipxai explain --method`` names (:data:`lipxai.cli.EXPLAIN_METHODS`) and what they compute.
METHODS = {
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


def parse_names(text: str, known, option: str) -> tuple[str, ...]:
    """``"a,b"`` -> ``("a", "b")``; an empty list or item (``"a,"``), a name not in ``known``
    and a repeated name are a ``ValueError`` that names the command-line ``option``."""
    names = tuple(m.strip() for m in text.split(","))
    if not all(m in known for m in names):
        raise ValueError(f"{option} takes a comma-separated list of {', '.join(known)}; got {text!r}")
    repeated = sorted({m for m in names if names.count(m) > 1})
    if repeated:
        raise ValueError(f"{option} lists {', '.join(repeated)} more than once; got {text!r}")
    return names


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


def parse_methods(text: str) -> tuple[str, ...]:
    """``"ig,saliency"`` -> ``("ig", "saliency")`` (``lipxai explain --method``)."""
    return parse_names(text, METHODS, "--method")


def exported_apply(run):
    """``run.apply`` with the reparametrisations frozen (:func:`lipxai.nn.export`): the same
    function, cheaper to differentiate many times; a hashable ``Partial`` (jit-static)."""
    plain, plain_vars = export(run.model, run.variables,
                               input_shape=(1, *data.DATASETS[run.config.data.name].image_shape))

    def apply(variables, x):
        return plain.apply(variables, run.normalize(x))

    return jax.tree_util.Partial(apply, plain_vars)


def last_spatial_layer(fn, x) -> str:
    """The path of the last layer ``fn`` calls whose output is ``[B, h, w, K]`` with ``h, w > 1``."""
    layers = [name for name, shape in explain.layer_shapes(fn, x).items()
              if len(shape) == 4 and shape[1] > 1 and shape[2] > 1]
    if not layers:
        raise ValueError("Grad-CAM needs a layer with spatial [B, h, w, K] outputs; the model has none")
    return layers[-1]


def attribute(fn, x, target, method: str, *, key, search: str = "pgd"):
    """One method of :data:`METHODS` on ``x``; returns ``(maps [B, H, W, ...], extra)``.

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
    raise ValueError(f"unknown method {method!r}; one of {', '.join(METHODS)}")


def explain_run(run, methods=DEFAULT_METHODS, *, n: int = 16, split: str = "test", seed: int = 0,
                search: str = "pgd") -> dict:
    """Attributions of ``run`` for the first ``n`` images of ``split``.

    Returns a dict with ``images``, ``labels``, ``predictions``, ``margins`` and, per
    method, ``maps[method]`` (and ``classes["counterfactual"]``), all numpy.
    """
    images, labels = data.load_split(run.config.data.name, split, data_dir=run.config.data.data_dir or None)
    if n < 1 or n > len(images):
        raise ValueError(f"n must be in [1, {len(images)}] (the size of split {split!r}), got {n}")
    x = jnp.asarray(data.preprocess(images[:n]))
    fn = exported_apply(run)
    pred = jnp.argmax(fn(x), axis=1)
    out = dict(images=np.asarray(x), labels=np.asarray(labels[:n]), predictions=np.asarray(pred),
               margins=np.asarray(margin(fn, x, pred)), maps={}, classes={})
    keys = jax.random.split(jax.random.PRNGKey(seed), len(methods))
    for method, key in zip(methods, keys, strict=True):
        maps, extra = attribute(fn, x, pred, method, key=key, search=search)
        out["maps"][method] = np.asarray(maps)
        if extra is not None:
            out["classes"][method] = extra
    return out


def plot_explanations(path: str, result: dict) -> None:
    """A grid: a column per image; the input, then a row per method.

    Attributions are summed over channels and shown on a symmetric blue-white-red scale
    per image (Grad-CAM maps are non-negative); ``nan`` (no boundary point found) shows
    as blank.  Counterfactual images are shown on the input's grey scale with their class.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images, maps = result["images"], result["maps"]
    n, rows = images.shape[0], 1 + len(maps)
    fig, axes = plt.subplots(rows, n, figsize=(1.3 * n, 1.45 * rows), squeeze=False)
    for j in range(n):
        ax = axes[0, j]
        ax.imshow(images[j].squeeze(-1) if images.shape[-1] == 1 else images[j], cmap="gray",
                  vmin=0, vmax=1)
        ok = "" if result["predictions"][j] == result["labels"][j] else f"\n(true {result['labels'][j]})"
        ax.set_title(f"{result['predictions'][j]}  m={result['margins'][j]:.2f}{ok}", fontsize=7)
        for i, (method, m) in enumerate(maps.items(), start=1):
            ax = axes[i, j]
            if method == "counterfactual":
                img = m[j].squeeze(-1) if m.shape[-1] == 1 else np.clip(m[j], 0, 1)
                ax.imshow(img, cmap="gray", vmin=0, vmax=1)
                ax.set_title(f"-> {result['classes'][method][j]}", fontsize=7)
            else:
                heat = m[j].sum(-1)
                scale = np.nanmax(np.abs(heat)) if np.isfinite(heat).any() else 1.0
                scale = scale if scale > 0 else 1.0
                ax.imshow(heat, cmap="bwr", vmin=-scale, vmax=scale)
        for i, method in enumerate(maps, start=1):
            if j == 0:
                axes[i, 0].set_ylabel(method, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("input", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
