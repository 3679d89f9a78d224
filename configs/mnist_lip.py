"""The quickstart: a 1-Lipschitz CNN on MNIST, trained with soft multiclass HKR, then certified.

An AOL 3x3 convolution into 32 channels, GroupSort and L2-norm pooling; a 2x2 stride-2 orthogonal
convolution into 64 channels (``downsample="patch"``: non-overlapping patches, so exactly orthogonal
and gradient-norm preserving) and GroupSort; Björck dense layers 3136-256-10. The loss is the soft
HKR of Serrurier et al. 2023 (OTNN), which weighs the wrong classes by a softmax so that the closest
ones dominate, with margin 2.2 (2300 steps of 256). The last 400 steps add
``5 * lipxai.losses.margin_eikonal``, holding the margin's gradient at norm 1 so that the one-step
transport counterfactual (:func:`lipxai.explain.counterfactual`) lands close to the boundary::

    lipxai quickstart                      # or: lipxai train --config configs/mnist_lip.py --workdir DIR

Headline: 97.76% clean and 47.85% certified accuracy at L2 radius 1.58 on the MNIST test split
(docs/results.md, "Certified accuracy on MNIST", with the variants and how the recipe was reached).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data = dict(name="mnist", data_dir="", train_split="train", test_split="test", normalize=())
    c.model = dict(name="cnn", num_classes=10, channels=(32, 64), dense=(256,), conv_method="aol",
                   dense_method="bjorck", group_size=2, downsample="patch")
    c.loss = dict(name="soft_hkr", alpha=0.98, min_margin=2.2, temperature=1.0)
    c.optim = dict(name="adam", lr=6e-3, warmup_steps=100, final_lr_fraction=0.01, weight_decay=0.0)
    c.train = dict(batch_size=256, num_steps=2300, log_every=50, eval_every=2300, checkpoint_every=575,
                   eval_examples=0, eikonal_weight=5.0, eikonal_steps=400, divergence_factor=1e3)
    c.certify = dict(eps=(0.5, 1.0, 1.58))
    c.evaluate = dict(n=256, methods=("saliency", "ig", "smoothgrad"),
                      metrics=("deletion", "insertion", "sparseness", "stability"), samples=10)
    return ml_collections.ConfigDict(c)
