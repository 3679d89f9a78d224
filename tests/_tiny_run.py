"""Tiny-run overrides shared by the training and CLI tests (a few steps on real MNIST)."""

TINY = [
    "--config.model.channels=(4, 8)", "--config.model.dense=(16,)", "--config.train.batch_size=32",
    "--config.train.eval_examples=256", "--config.train.log_every=1",
    "--config.train.eikonal_weight=0.0", "--config.train.eikonal_steps=0",   # the quickstart's final phase
]
