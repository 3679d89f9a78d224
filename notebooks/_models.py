"""The two MNIST models the notebooks compare: the 1-Lipschitz quickstart run and a plain CNN.

Notebooks import this from their own folder (the kernel runs in ``notebooks/``).
"""

import os
import tempfile

import jax

import lipxai as lx
from lipxai.train import config as config_lib


def lipschitz_model(repo, fast):
    """The quickstart run (``runs/quickstart``, from ``lipxai quickstart``) when it exists and
    ``fast`` is off; otherwise a short run of the quickstart config (tiny when ``fast``).
    Returns the exported model (cheap repeated gradients) as a ``Partial`` over its weights,
    ``fn.func(weights, x)`` and ``fn.args[0]`` (what a weight-randomisation test replaces),
    and the run."""
    quickstart = os.path.join(repo, "runs", "quickstart")
    if not fast and os.path.exists(os.path.join(quickstart, "config.json")):
        run = lx.load_run(quickstart)
    else:
        overrides = (["--config.train.num_steps=40", "--config.model.channels=(8, 16)",
                      "--config.model.dense=(32,)", "--config.train.eval_examples=500",
                      "--config.train.eikonal_weight=0.0", "--config.train.eikonal_steps=0"]
                     if fast else ["--config.train.num_steps=1000"])
        config = config_lib.apply_overrides(
            config_lib.load_config(os.path.join(repo, "configs", "mnist_lip.py")), overrides)
        workdir = tempfile.mkdtemp(prefix="lipxai-nb-")
        lx.train.train(config, workdir, verbose=False)
        run = lx.load_run(workdir)
    plain, weights = run.export()
    return jax.tree_util.Partial(lambda w, z: plain.apply(w, run.normalize(z)), weights), run


def unconstrained_model(train_images, train_labels, fast, steps=None):
    """A ReLU CNN (``lipxai.nn.zoo.unconstrained_cnn``) trained with cross-entropy and Adam
    (1000 steps of 128 images; 40 and a tiny model when ``fast``)."""
    cnn = (lx.nn.zoo.unconstrained_cnn(channels=(8, 16), dense=(32,)) if fast
           else lx.nn.zoo.unconstrained_cnn())
    params = lx.train.fit_cross_entropy(cnn, lx.data.preprocess(train_images), train_labels,
                                        steps=steps or (40 if fast else 1000), key=jax.random.PRNGKey(0))
    return jax.tree_util.Partial(lambda p, z: cnn.apply(p, z), params)
