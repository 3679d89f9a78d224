"""The ``lipxai`` command: train, certify, explain, evaluate, quickstart, prepare-data."""

from __future__ import annotations

import argparse
import os
import sys
import time

QUICKSTART_CONFIG = "mnist_lip.py"
#: ``lipxai explain --method`` choices (kept here so ``--help`` does not import JAX).
EXPLAIN_METHODS = ("saliency", "gradient_x_input", "ig", "idgi", "smoothgrad", "vargrad", "gradcam",
                   "gradcam++", "bsm", "big", "counterfactual")
DEFAULT_EXPLAIN = ("saliency", "ig", "smoothgrad", "big", "counterfactual")
#: ``lipxai evaluate --metrics`` choices (the keys of :data:`lipxai.run_evaluate.METRICS`).
EVALUATE_METRICS = ("deletion", "insertion", "pixel_flipping", "mufidelity", "infidelity",
                    "completeness", "sparseness", "complexity", "max_sensitivity",
                    "avg_sensitivity", "local_lipschitz", "stability")
DEFAULT_EVALUATE_METHODS = ("saliency", "ig", "smoothgrad", "big")
DEFAULT_EVALUATE_METRICS = ("deletion", "insertion", "mufidelity", "sparseness", "max_sensitivity",
                            "stability")


class UsageError(ValueError):
    """A bad command-line value (reported in one line)."""


def main(argv=None) -> int:
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    overrides = [r for r in rest if r.startswith("--config.")]
    unknown = [r for r in rest if not r.startswith("--config.")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if overrides and args.command not in ("train", "quickstart"):
        parser.error(f"--config.* overrides only apply to train and quickstart, got {overrides[0]}")
    from lipxai import config as config_lib
    from lipxai import data
    from lipxai.run import RunNotFoundError

    try:
        return args.handler(args, overrides)
    except (config_lib.ConfigError, data.DatasetNotFoundError, RunNotFoundError, ImportError,
            UsageError) as err:
        print(f"lipxai {args.command}: error: {err}", file=sys.stderr)
        return 2
    except FloatingPointError as err:
        from lipxai.train import TrainingDivergedError

        if not isinstance(err, TrainingDivergedError):  # e.g. JAX_DEBUG_NANS: keep the traceback
            raise
        print(f"lipxai {args.command}: error: {err}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lipxai", description="Explanations and certificates of 1-Lipschitz networks.")
    sub = parser.add_subparsers(dest="command")

    train = sub.add_parser("train", help="train a model from a config file (resumes from the last checkpoint)",
                           epilog="Any config key can be overridden: --config.optim.lr=1e-3")
    train.add_argument("--config", required=True, help="a Python config file with get_config()")
    train.add_argument("--workdir", required=True, help="run directory (config.json, checkpoints/, metrics.jsonl)")
    train.set_defaults(handler=_train)

    cert = sub.add_parser("certify", help="certified accuracy and Lipschitz bounds of a run -> DIR/certify.json")
    cert.add_argument("workdir")
    cert.add_argument("--eps", default=None,
                      help="comma-separated L2 radii (default 0.5,1.0,1.58); with --explanation: "
                           "L_inf radii of the explanation boxes (default 0.001,0.01)")
    cert.add_argument("--split", default="test")
    cert.add_argument("--n", type=int, default=None,
                      help="certify only the first N examples (--explanation: default 256)")
    cert.add_argument("--explanation", action="store_true",
                      help="also certify the saliency maps by interval bounds through the "
                           "backward pass (top-k, sign and L2-change certificates)")
    cert.add_argument("--k", type=int, default=20, help="top-k size for --explanation (default 20)")
    cert.add_argument("--bounds", choices=("ibp", "symbolic"), default="ibp",
                      help="interval method for --explanation: ibp (default) or symbolic "
                           "(tighter; memory ~ input features x activations per image)")
    cert.set_defaults(handler=_certify)

    expl = sub.add_parser("explain", help="attribution maps and counterfactuals of a run -> a PNG grid",
                          description="Explain the first N images of a split: one row per method.")
    expl.add_argument("workdir")
    expl.add_argument("--method", default=",".join(DEFAULT_EXPLAIN),
                      help="comma-separated, from: " + ", ".join(EXPLAIN_METHODS)
                      + f" (default {','.join(DEFAULT_EXPLAIN)})")
    expl.add_argument("--n", type=int, default=16, help="number of images (default 16)")
    expl.add_argument("--out", default=None, help="PNG path (default WORKDIR/explanations.png)")
    expl.add_argument("--split", default="test")
    expl.add_argument("--search", default="pgd", choices=("pgd", "deepfool", "cw", "transport", "all"),
                      help="boundary search used by bsm and big (default pgd)")
    expl.add_argument("--seed", type=int, default=0, help="seed of the SmoothGrad noise")
    expl.set_defaults(handler=_explain)

    ev = sub.add_parser("evaluate", help="explanation metrics per method -> DIR/evaluate.{json,md} and plots",
                        description="Explain the first N images of a split (predicted class) with each "
                                    "method and score the attributions with each metric.")
    ev.add_argument("workdir")
    ev.add_argument("--methods", default=",".join(DEFAULT_EVALUATE_METHODS),
                    help="comma-separated, from: " + ", ".join(m for m in EXPLAIN_METHODS if m != "counterfactual")
                    + f" (default {','.join(DEFAULT_EVALUATE_METHODS)})")
    ev.add_argument("--metrics", default=",".join(DEFAULT_EVALUATE_METRICS),
                    help="comma-separated, from: " + ", ".join(EVALUATE_METRICS)
                    + f" (default {','.join(DEFAULT_EVALUATE_METRICS)})")
    ev.add_argument("--n", type=int, default=256, help="number of images (default 256)")
    ev.add_argument("--samples", type=int, default=20,
                    help="draws of the sampled metrics (MuFidelity subsets, sensitivity and "
                         "stability noise; default 20)")
    ev.add_argument("--batch", type=int, default=64, help="images per batch (default 64)")
    ev.add_argument("--split", default="test")
    ev.add_argument("--search", default="pgd", choices=("pgd", "deepfool", "cw", "transport", "all"),
                    help="boundary search used by bsm and big (default pgd)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the noise and random subsets")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    ev.set_defaults(handler=_evaluate)

    quick = sub.add_parser("quickstart", help="train, certify and report a 1-Lipschitz CNN on MNIST",
                           epilog="Any key of configs/mnist_lip.py can be overridden: --config.train.num_steps=500")
    quick.add_argument("--workdir", default=os.path.join("runs", "quickstart"))
    quick.add_argument("--config", default=None, help="config file (default: configs/mnist_lip.py)")
    quick.set_defaults(handler=_quickstart)

    prep = sub.add_parser("prepare-data", help="download and prepare a tfds dataset (needs lipxai[prepare])")
    prep.add_argument("name")
    prep.add_argument("--data-dir", default=None)
    prep.add_argument("--manual-dir", default=None, help="folder holding manually downloaded files")
    prep.set_defaults(handler=_prepare)
    return parser


def _load_config(path, overrides):
    from lipxai import config as config_lib

    return config_lib.apply_overrides(config_lib.load_config(path), overrides)


def _train(args, overrides) -> int:
    from lipxai.train import train

    train(_load_config(args.config, overrides), args.workdir)
    print(f"run written to {args.workdir}")
    return 0


def _parse_eps(text: str):
    from lipxai.config import ConfigError

    try:
        eps = tuple(float(e) for e in text.split(","))
    except ValueError:
        raise ConfigError(f"--eps must be comma-separated numbers, got {text!r}") from None
    if min(eps) < 0:
        raise ConfigError(f"--eps values must be >= 0, got {text!r}")
    return eps


def _certify(args, overrides) -> int:
    from lipxai.run_certify import certify_run, format_table, write_certify_json

    if args.explanation:
        if args.k < 1:
            raise UsageError(f"--k must be >= 1, got {args.k}")
        if args.n is not None and args.n < 1:
            raise UsageError(f"--n must be >= 1, got {args.n}")
        explanation_eps = _parse_eps(args.eps or "0.001,0.01")
        eps = (0.5, 1.0, 1.58)
    else:
        eps = _parse_eps(args.eps or "0.5,1.0,1.58")
    run = _existing_run(args.workdir)
    result, *_ = certify_run(run, eps=eps, split=args.split, n=args.n)
    print(format_table(result))
    if args.explanation:
        from lipxai.run_certify import certify_explanations, format_explanation_table

        result["explanation"] = certify_explanations(run, explanation_eps, k=args.k,
                                                     split=args.split, n=args.n or 256,
                                                     method=args.bounds)
        print(format_explanation_table(result["explanation"]))
    print(f"written {write_certify_json(result, args.workdir)}")
    return 0


def _usage(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with a ``ValueError`` reported as a bad command-line value."""
    try:
        return fn(*args, **kwargs)
    except ValueError as err:
        raise UsageError(str(err)) from None


def _existing_run(workdir):
    from lipxai.run import RunNotFoundError, load_run

    if not os.path.isdir(workdir):
        raise RunNotFoundError(f"workdir {workdir} does not exist")
    return load_run(workdir)


def _explain(args, overrides) -> int:
    from lipxai.run_explain import explain_run, parse_methods, plot_explanations

    methods = _usage(parse_methods, args.method)
    run = _existing_run(args.workdir)
    result = _usage(explain_run, run, methods, n=args.n, split=args.split, seed=args.seed,
                    search=args.search)
    out = args.out or os.path.join(args.workdir, "explanations.png")
    plot_explanations(out, result)
    print(f"written {out}")
    return 0


def _evaluate(args, overrides) -> int:
    from lipxai.run_evaluate import (ATTRIBUTION_METHODS, METRICS, evaluate_run, format_table,
                                     parse_names, write_evaluation)

    methods = _usage(parse_names, args.methods, ATTRIBUTION_METHODS, "--methods")
    metric_names = _usage(parse_names, args.metrics, METRICS, "--metrics")
    run = _existing_run(args.workdir)
    result = _usage(evaluate_run, run, methods, metric_names, n=args.n, split=args.split,
                    seed=args.seed, samples=args.samples, batch=args.batch, search=args.search,
                    progress=not args.no_progress)
    print(format_table(result))
    paths = write_evaluation(result, args.workdir)
    print("written " + ", ".join(paths.values()))
    return 0


def _default_quickstart_config() -> str:
    from lipxai.config import ConfigError

    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.path.join("configs", QUICKSTART_CONFIG),
                      os.path.join(here, os.pardir, "configs", QUICKSTART_CONFIG)):
        if os.path.isfile(candidate):
            return candidate
    raise ConfigError(f"configs/{QUICKSTART_CONFIG} not found: run from the lipxai repository or pass --config")


def _quickstart(args, overrides) -> int:
    from lipxai.report import write_quickstart_report
    from lipxai.run import load_run
    from lipxai.run_certify import certify_run, format_table, write_certify_json
    from lipxai.run_explain import explain_run, plot_explanations
    from lipxai.train import train

    config = _load_config(args.config or _default_quickstart_config(), overrides)
    _prepare_if_missing(config.data.name, config.data.data_dir or None)
    start = time.perf_counter()
    train(config, args.workdir)
    seconds = time.perf_counter() - start
    run = load_run(args.workdir)
    result, images, labels, logits = certify_run(run, eps=tuple(config.certify.eps))
    print(format_table(result))
    write_certify_json(result, args.workdir)
    plot_explanations(os.path.join(args.workdir, "explanations.png"), explain_run(run, n=8))
    evaluation = _quickstart_evaluation(run, config)
    report = write_quickstart_report(args.workdir, result, images, labels, logits, train_seconds=seconds,
                                     evaluation=evaluation)
    print(f"report written to {report}")
    return 0


def _quickstart_evaluation(run, config):
    """The explanation metrics of the quickstart report (``config.evaluate``), written to
    ``evaluate.{json,md}`` and plots; ``None`` when the config has no ``evaluate`` section."""
    from lipxai.run_evaluate import evaluate_run, format_table, write_evaluation

    if "evaluate" not in config:
        return None
    ev = config.evaluate
    result = evaluate_run(run, tuple(ev.methods), tuple(ev.metrics), n=ev.n, samples=ev.samples,
                          progress=True)
    print(format_table(result))
    write_evaluation(result, run.workdir)
    return result


def _prepare_if_missing(name: str, data_dir) -> None:
    """First run on a new machine: download and prepare the dataset with tensorflow-datasets."""
    from lipxai import data

    try:
        data.load_split(name, "test", data_dir=data_dir)
    except data.DatasetNotFoundError:
        print(f"{name} is not prepared yet: downloading and preparing it with tensorflow-datasets",
              file=sys.stderr)
        data.prepare(name, data_dir=data_dir)


def _prepare(args, overrides) -> int:
    from lipxai import data

    path = data.prepare(args.name, data_dir=args.data_dir, manual_dir=args.manual_dir)
    print(f"{args.name} prepared in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
