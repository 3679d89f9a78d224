"""Training for robust explanations: one method, one dataset, one model per config, the family of
runs that Wicker et al. ("Robust explanation constraints for neural networks", ICLR 2023)
compare, as ``get_config("METHOD/DATASET/MODEL")``::

    lipxai train --config configs/explanation_training.py:input_gradient_l2/mnist/cnn --workdir DIR
    lipxai train --config configs/explanation_training.py:hessian_norm/fashion_mnist/fcn \\
        --workdir DIR --config.objective.terms.hessian_norm.lam=2.0

METHOD is the objective's term (``lipxai.train.objectives.TERMS``) added to the task loss:

* ``standard``: the task loss alone;
* ``input_gradient_l2``: double backpropagation (Ross & Doshi-Velez, AAAI 2018);
* ``hessian_norm``: the squared Frobenius norm of the input Hessian of the per-example
  cross-entropy, by Gaussian Hessian-vector products (``of="loss"``: every model here is
  piecewise linear, so the logit's own Hessian is zero almost everywhere);
* ``gradient_smoothness``: the change of the true-class gradient over the L_inf box of radius
  ``eps`` (Wicker's "L2" baseline);
* ``certified_explanation``: the mean width of sound interval bounds on the input gradient of
  the loss over the L_inf box of radius ``eps``, ramped from 0 over the first quarter of training
  (Wicker et al. 2023);
* ``pgd_adversarial``: the task loss at a PGD adversarial example (Madry et al., ICLR 2018),
  added to the clean task loss with equal weights;
* ``trades``: the KL divergence between the clean and the adversarial output (Zhang et al.,
  ICML 2019);
* ``scaat``: the KL divergence to adversarial examples that may only change low-saliency features
  (our reading of Xu et al., BMVC 2023, see ``lipxai.train.objectives.scaat``);
* ``saliency_guided``: the KL divergence to the input with its lowest-saliency half replaced by
  noise (Ismail et al., NeurIPS 2021).

DATASET is ``mnist`` or ``fashion_mnist`` (inputs in [0, 1], the objective's domain). MODEL is
Wicker's fully connected ReLU network 784-128-10 (``fcn``), Wicker's ReLU CNN conv16 (k4, s2) ->
conv32 (k4, s1) -> fc100 -> fc10 (``cnn``), both with softmax cross-entropy, Adam 1e-3 and
batches of 128, the unconstrained counterpart of the quickstart's CNN (``plain_cnn``, below), or
the quickstart's 1-Lipschitz CNN with its soft HKR loss and optimiser
(``lipschitz_cnn``, ``configs/mnist_lip.py`` without the eikonal phase, so that only the
method's term differs between runs). The coefficients are starting points, not tuned values;
every one can be overridden with ``--config.objective.terms.METHOD.KEY=VALUE``.

``plain_cnn`` is our reading of "the same architecture unconstrained" (Serrurier et al.,
NeurIPS 2023, compare a 1-Lipschitz network with its unconstrained twin): the quickstart CNN's
widths (conv 32 -> conv 64 -> dense 256 -> 10) with ordinary 3x3 SAME ReLU convolutions, each
followed by 2x2 max-pooling, in place of the AOL convolution with GroupSort and L2-norm pooling
and the orthogonal 2x2 stride-2 convolution; plain dense layers in place of the Björck ones;
cross-entropy and the unconstrained models' optimiser in place of soft HKR.
"""

import os

import ml_collections

from lipxai.train.config import load_config

#: The objective terms of each method (name -> hyperparameters).
METHODS = {
    "standard": {},
    "input_gradient_l2": {"input_gradient_l2": dict(lam=10.0)},
    "hessian_norm": {"hessian_norm": dict(lam=1.0, samples=1, of="loss")},
    "gradient_smoothness": {"gradient_smoothness": dict(lam=1.0, eps=0.05)},
    "certified_explanation": {"certified_explanation": dict(alpha=1.0, eps=0.025, ramp_fraction=0.25)},
    "pgd_adversarial": {"pgd_adversarial": dict(weight=1.0, eps=0.1, steps=7)},
    "trades": {"trades": dict(beta=6.0, eps=0.1, steps=7)},
    "scaat": {"scaat": dict(lam=1.0, eps=0.1, steps=5, q=0.5)},
    "saliency_guided": {"saliency_guided": dict(lam=1.0, k_fraction=0.5)},
}
DATASETS = ("mnist", "fashion_mnist")
#: The unconstrained models: ``model`` sections of ``lipxai.nn.zoo`` functions.
UNCONSTRAINED = {
    "fcn": dict(name="unconstrained_mlp", num_classes=10, hidden=(128,)),
    "cnn": dict(name="unconstrained_cnn", num_classes=10, channels=(16, 32), dense=(100,),
                kernel_sizes=(4, 4), strides=(2, 1), padding="VALID", pool=False),
    "plain_cnn": dict(name="unconstrained_cnn", num_classes=10, channels=(32, 64), dense=(256,),
                      kernel_sizes=(3, 3), strides=(1, 1), padding="SAME", pool=True),
}
MODELS = (*UNCONSTRAINED, "lipschitz_cnn")


def get_config(arg: str = "standard/mnist/cnn") -> ml_collections.ConfigDict:
    parts = arg.split("/")
    if len(parts) != 3:
        raise ValueError(f"the config argument must be METHOD/DATASET/MODEL, got {arg!r}")
    method, dataset, model = parts
    for what, value, known in (("method", method, METHODS), ("dataset", dataset, DATASETS),
                               ("model", model, MODELS)):
        if value not in known:
            raise ValueError(f"unknown {what} {value!r}; known: {', '.join(known)}")
    if model == "lipschitz_cnn":
        c = load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist_lip.py"))
        c.train.eikonal_weight = 0.0
        c.train.eikonal_steps = 0
    else:
        c = ml_collections.ConfigDict()
        c.seed = 0
        c.data = dict(name=dataset, data_dir="", train_split="train", test_split="test", normalize=())
        c.model = UNCONSTRAINED[model]
        c.loss = dict(name="cross_entropy")
        c.optim = dict(name="adam", lr=1e-3, warmup_steps=100, final_lr_fraction=0.01, weight_decay=0.0)
        c.train = dict(batch_size=128, num_steps=2000, log_every=50, eval_every=2000, checkpoint_every=500,
                       eval_examples=0, eikonal_weight=0.0, eikonal_steps=0, divergence_factor=1e3)
        c.certify = dict(eps=())   # no Lipschitz bound: no certified radius
    c.data.name = dataset
    c.objective = dict(task_weight=1.0, domain=(0.0, 1.0), terms=METHODS[method])
    return ml_collections.ConfigDict(c)
