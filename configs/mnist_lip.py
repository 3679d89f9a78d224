"""The quickstart: a 1-Lipschitz CNN on MNIST trained with multiclass HKR (about 5 min on 2 CPU cores)."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data = dict(name="mnist", data_dir="", train_split="train", test_split="test", normalize=())
    c.model = dict(name="cnn", num_classes=10, channels=(32, 64), dense=(128,), conv_method="aol",
                   dense_method="bjorck", group_size=2)
    c.loss = dict(name="multiclass_hkr", alpha=0.98, min_margin=1.0)
    c.optim = dict(name="adam", lr=3e-3, warmup_steps=100, final_lr_fraction=0.01, weight_decay=0.0)
    c.train = dict(batch_size=128, num_steps=2500, log_every=50, eval_every=500, checkpoint_every=500,
                   eval_examples=0)
    c.certify = dict(eps=(0.5, 1.0, 1.58))
    return ml_collections.ConfigDict(c)
