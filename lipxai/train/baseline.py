"""Unconstrained baselines: a flax classifier fitted with softmax cross-entropy and Adam.

The reference point of the comparisons the toolkit makes (saliency, counterfactuals, metrics
and attacks of a 1-Lipschitz network against an ordinary one): a short, plain training loop
with no Lipschitz constraint, no sharding and no checkpoints.
"""

from __future__ import annotations

import jax
import numpy as np
import optax

from lipxai._core.checks import positive_int


def fit_cross_entropy(model, x, labels, *, steps: int, key, batch_size: int = 128,
                      lr: float = 1e-3, seed: int = 0):
    """Parameters of ``model`` (a flax module ``x -> logits``) after ``steps`` Adam steps on
    the mean softmax cross-entropy of batches of ``batch_size`` examples drawn with
    replacement from ``(x, labels)`` by ``numpy.random.default_rng(seed)``; ``key``
    initialises the parameters.
    """
    steps, batch_size = positive_int("steps", steps), positive_int("batch_size", batch_size)
    x, labels = np.asarray(x), np.asarray(labels)
    if x.shape[0] != labels.shape[0]:
        raise ValueError(f"x and labels must have the same length, got {x.shape[0]} and {labels.shape[0]}")
    params = jax.jit(model.init)(key, x[:1])
    opt = optax.adam(lr)
    state = jax.jit(opt.init)(params)

    @jax.jit
    def step(params, state, xb, yb):
        loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(model.apply(p, xb), yb).mean()
        updates, state = opt.update(jax.grad(loss)(params), state)
        return optax.apply_updates(params, updates), state

    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.integers(0, len(labels), batch_size)
        params, state = step(params, state, x[idx], labels[idx])
    return params
