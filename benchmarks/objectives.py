"""Step time of each training objective relative to a plain step on the same model and batch.

    TFDS_DATA_DIR=/path/to/tfds python benchmarks/objectives.py [--quick] [--model cnn]

Every method of configs/explanation_training.py (``standard`` is the plain step: the task loss
alone) is built as ``lipxai train`` builds it (lipxai.train.build: model, optimiser, objective)
and its jitted step (lipxai.train.step.make_objective_step) is timed on the same real MNIST
batch, the methods interleaved in each repeat; the median of the repeats is reported. An
adversarial term with k attack steps costs k forward-backward passes more than a plain step,
so issue 20's budget is (k + 2)x for them and 4x for ``certified_explanation``; the others are
reported without a budget. Prints one JSON object.

``--without-cpu-rewrite`` also times every method with the train step's XLA:CPU convolution
rewrite turned off (``lipxai.train.step`` differentiating the objective as written), in the
same interleaved run, as ``results_without_cpu_rewrite``: the before/after of that rewrite.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from unittest import mock

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import batch_and_repeats, interleaved, mnist_test_images, timing_parser  # noqa: E402

from lipxai.train import config as config_lib  # noqa: E402
from lipxai.train.build import build_model, build_objective, build_optimizer  # noqa: E402
from lipxai.train.state import init_state  # noqa: E402
from lipxai.train import step as step_lib  # noqa: E402

CONFIG = str(Path(__file__).resolve().parent.parent / "configs" / "explanation_training.py")
METHODS = ("standard", "input_gradient_l2", "hessian_norm", "gradient_smoothness",
           "certified_explanation", "pgd_adversarial", "trades", "scaat", "saliency_guided")
#: Step time budgets relative to the plain step (issue 20): attack steps k -> (k + 2)x.
FIXED_BUDGETS = {"certified_explanation": 4.0}
ATTACKS = ("pgd_adversarial", "trades", "scaat")


def budget(method: str, config) -> float | None:
    if method in ATTACKS:
        return config.objective.terms[method].steps + 2.0
    return FIXED_BUDGETS.get(method)


def stepper(method: str, model_name: str, x, y, steps: int, rewrite: bool = True):
    """A call that runs ``steps`` train steps of ``method`` on ``(x, y)`` (compiled and warmed up
    here), and the method's config; ``rewrite=False`` compiles the step without its XLA:CPU
    convolution rewrite."""
    config = config_lib.load_config(f"{CONFIG}:{method}/mnist/{model_name}")
    model = build_model(config.model)
    optimizer = build_optimizer(config.optim, config.train.num_steps)
    step = step_lib.make_objective_step(model, build_objective(config), optimizer,
                                        num_steps=config.train.num_steps, seed=config.seed)
    state = init_state(model, optimizer, jax.random.PRNGKey(0), x[:1])
    with mock.patch.object(step_lib, "for_train_steps", side_effect=lambda fn: fn) if not rewrite \
            else contextlib.nullcontext():
        state, _ = step(state, x, y)
    jax.block_until_ready(state)
    holder = [state]

    def run():
        s = holder[0]
        for _ in range(steps):
            s, metrics = step(s, x, y)
        holder[0] = jax.block_until_ready(s)
        return metrics

    return run, config


def main():
    parser = timing_parser(__doc__, batch=128, repeats=5, quick_batch=32, quick_repeats=2)
    parser.add_argument("--model", default="cnn", choices=("fcn", "cnn", "lipschitz_cnn"))
    parser.add_argument("--steps", type=int, default=5, help="train steps per timed window")
    parser.add_argument("--without-cpu-rewrite", action="store_true",
                        help="also time each method without the train step's XLA:CPU rewrite")
    args = parser.parse_args()
    batch, repeats = batch_and_repeats(args)
    x, y = mnist_test_images(batch)
    variants = {"results": True, **({"results_without_cpu_rewrite": False} if args.without_cpu_rewrite else {})}
    runs, configs = {}, {}
    for method in METHODS:
        for name, rewrite in variants.items():
            runs[name, method], configs[method] = stepper(method, args.model, x, y, args.steps, rewrite)
    times, _ = interleaved(runs, repeats)
    report = dict(model=args.model, batch=batch, steps_per_window=args.steps, repeats=repeats,
                  backend=jax.default_backend(), load_average_1min=os.getloadavg()[0])
    for name in variants:
        plain = times[name, "standard"]
        results = {}
        for method in METHODS:
            ratio = times[name, method] / plain
            limit = budget(method, configs[method])
            results[method] = dict(step_ms=1e3 * times[name, method] / args.steps, ratio_to_plain=ratio,
                                   budget=limit, within_budget=None if limit is None else ratio <= limit)
        report[name] = results
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
