"""Certify a trained run: clean and certified accuracy with the model's own Lipschitz bounds,
and the certified robustness of its saliency maps over input boxes.

:func:`certificates` and :func:`explanation_certificates` are functions of ``(fn, x, labels)``
returning JSON-ready dicts; :func:`certify_run` and :func:`certify_explanations` apply them to
a split of a :class:`lipxai.train.rundir.Run` (``lipxai certify``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lipxai import bounds, certify, data
from lipxai._core.checks import one_of, positive_int
from lipxai.apps.explain import check_images
from lipxai.apps.names import CERTIFY_EPS, EXPLANATION_K, EXPLANATION_N
from lipxai.train.accuracy import accuracy_report

#: The keys of a :func:`certificates` result that feed the report's figures, not ``certify.json``.
FIGURE_KEYS = ("curve", "examples")


def lipschitz_bound(run) -> float:
    """The guaranteed upper bound of the L2 Lipschitz constant of ``run.apply`` on [0, 1]
    images: :func:`lipxai.certify.lipschitz_upper_bound` of the model, times the input
    normalisation's ``1/std``."""
    upper = certify.lipschitz_upper_bound(run.model, run.variables, (1, *run.image_shape))
    return float(upper) * run.input_lipschitz_factor


def predict(fn, x, *, batch_size: int = 1000) -> np.ndarray:
    """The logits ``fn(x)`` (host numpy), ``batch_size`` examples at a time."""
    apply = jax.jit(fn)
    return np.concatenate([np.asarray(apply(jnp.asarray(x[i:i + batch_size])))
                           for i in range(0, len(x), batch_size)])


def certificates(fn, x, labels, *, eps=CERTIFY_EPS, lipschitz: float, lower_bound_examples: int = 16,
                 seed: int = 0, curve_eps_max: float = 3.0, curve_points: int = 61,
                 examples: int = 8) -> dict:
    """Clean and certified accuracy of ``fn`` on ``(x, labels)`` (L2 radii ``eps``).

    ``lipschitz`` must be a guaranteed upper bound of ``fn``'s L2 Lipschitz constant (for a
    run: :func:`lipschitz_bound`), so that every certified example is certified for ``fn``;
    the attained lower bound (:func:`lipxai.certify.lipschitz_lower_bound` on the first
    ``lower_bound_examples`` images) is reported beside it.  Besides those numbers (the
    content of ``certify.json``) the result holds, under :data:`FIGURE_KEYS`, the certified
    accuracy on ``curve_points`` radii in ``[0, curve_eps_max]`` and the prediction, label,
    margin and radius of the first ``examples`` images.
    """
    logits = predict(fn, x)
    lower = certify.lipschitz_lower_bound(fn, jnp.asarray(x[:lower_bound_examples]),
                                          key=jax.random.PRNGKey(seed), steps=10)
    result = accuracy_report(logits, labels, eps, lipschitz=lipschitz)
    result.update(lipschitz_upper=lipschitz, lipschitz_lower=float(lower))
    grid = np.linspace(0.0, curve_eps_max, curve_points).astype(np.float32)
    curve = certify.certified_accuracy(logits, labels, grid, lipschitz=lipschitz)
    result["curve"] = dict(eps=grid.tolist(), certified_accuracy=np.asarray(curve).tolist())
    top2 = np.sort(logits[:examples], axis=-1)[:, -2:]
    result["examples"] = dict(
        prediction=np.argmax(logits[:examples], -1).tolist(), label=np.asarray(labels[:examples]).tolist(),
        margin=(top2[:, 1] - top2[:, 0]).tolist(),
        radius=np.asarray(certify.radius(logits[:examples], lipschitz=lipschitz)).tolist())
    return result


def certify_run(run, *, eps=CERTIFY_EPS, split: str = "test", n: int | None = None, seed: int = 0) -> dict:
    """:func:`certificates` of ``run.apply`` on the first ``n`` examples (``None``: all) of
    ``split``, with the run's guaranteed Lipschitz bound; adds ``split`` and ``step``."""
    x, labels = run.split(split, n)
    result = certificates(run.apply, x, labels, eps=eps, lipschitz=lipschitz_bound(run), seed=seed)
    return {**result, "split": split, "step": run.step}


#: What ``method`` of :func:`explanation_certificates` propagates, and its default batch size
#: (symbolic bounds keep (input features) x (activations) coefficients per image).
BOUND_METHODS = {
    "ibp": ("interval bound propagation through the forward and backward pass", 64),
    "symbolic": ("interval bounds through the backward pass, forward values also bounded "
                 "linearly in the input (lipxai.bounds.symbolic)", 4),
}


def explanation_certificates(fn, x, eps, *, k: int = EXPLANATION_K, method: str = "ibp",
                             batch_size: int | None = None) -> dict:
    """Certified robustness of the saliency maps of ``fn`` over L_inf input boxes.

    For each radius in ``eps``, interval bounds on the input gradient of the predicted logit
    over ``[x - eps, x + eps] ∩ [0, 1]`` (:func:`lipxai.bounds.gradient_bounds` with
    ``method``) give the certificates of :func:`lipxai.bounds.certify_explanation`, averaged
    over the images ``x`` (floats in [0, 1]); the same boxes' forward bounds give the
    prediction certificates.  ``method``: ``"ibp"`` or ``"symbolic"`` (tighter, more memory:
    default ``batch_size`` 4 instead of 64).  The certificates are those of the predicted
    class, so no labels are needed.  Returns ``{"eps": {str(eps): {...}}}`` plus the settings.
    """
    check_images("x", x)
    description, default_batch = BOUND_METHODS[one_of("method", method, BOUND_METHODS)]
    batch_size = batch_size or default_batch

    @jax.jit
    def certificates_of(x, target, radius):
        b = bounds.gradient_bounds(fn, x, target, eps=radius, domain=(0.0, 1.0), method=method)
        return bounds.certify_explanation(b, target, k=k)

    per_eps = {}
    for radius in eps:
        parts = []
        for start in range(0, len(x), batch_size):
            xb = jnp.asarray(x[start:start + batch_size])
            target = jnp.argmax(fn(xb), axis=1)
            cert = certificates_of(xb, target, jnp.float32(radius))
            parts.append({name: np.asarray(v) for name, v in cert.items() if name != "sign_stable"})
        merged = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        per_eps[str(radius)] = dict(
            topk_stable=float(merged["topk_stable"].mean()),
            topk_certified_mean=float(merged["topk_certified"].mean()),
            sign_stable_fraction=float(merged["sign_stable_fraction"].mean()),
            change_l2_median=float(np.median(merged["change_l2"])),
            relative_change_l2_median=float(np.median(merged["relative_change_l2"])),
            prediction_certified=float(merged["prediction_certified"].mean()),
        )
    return dict(norm="linf", k=k, n=len(x), explanation="saliency of the predicted logit",
                bounds=method, method=description, eps=per_eps)


def certify_explanations(run, eps, *, k: int = EXPLANATION_K, split: str = "test", n: int = EXPLANATION_N,
                         method: str = "ibp", batch_size: int | None = None, images=None) -> dict:
    """:func:`explanation_certificates` of ``run.apply`` on the first ``n`` images of
    ``split`` (fewer when the split is smaller), or of ``images`` (a uint8 batch ``[N, H, W,
    C]`` of the run's dataset) when given."""
    n = positive_int("n", n)
    if images is None:
        x, _ = run.split(split)
    else:
        x = data.preprocess(check_images("images", images, data.DATASETS[run.config.data.name]))
    return explanation_certificates(run.apply, x[:n], eps, k=k, method=method, batch_size=batch_size)
