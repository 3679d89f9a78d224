"""The ``lipxai`` command: train, certify, explain, evaluate, quickstart, prepare-data.

Argument parsing and error mapping only: each command checks its arguments, then calls
:mod:`lipxai.apps` (the work) and :mod:`lipxai.apps.report` (the files).  A user's mistake is
one line on stderr and exit status 2, told before any heavy work.  The handlers import the
apps, the training and the data modules inside the function, after the arguments are checked
(the documented lazy imports: ``--help`` and a mistyped option do not load them).
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from lipxai.apps.names import (
    ATTRIBUTION_METHODS,
    BOUND_METHODS,
    CERTIFY_EPS,
    DEFAULT_EVALUATE_METHODS,
    DEFAULT_EVALUATE_METRICS,
    DEFAULT_EXPLAIN,
    EVALUATE_BATCH,
    EVALUATE_METRICS,
    EVALUATE_N,
    EVALUATE_SAMPLES,
    EXPERIMENTS,
    EXPLAIN_METHODS,
    EXPLAIN_N,
    EXPLANATION_EPS,
    EXPLANATION_K,
    EXPLANATION_N,
    SEARCHES,
    parse_names,
    result_stem,
)


class UsageError(ValueError):
    """A bad command-line value (reported in one line)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``lipxai certify: error: argument --n: ...``): a
    mistyped option should not bury its message under the usage text."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv=None) -> int:
    """Run the ``lipxai`` command; returns the exit status (2: a user's mistake, told in one
    line on stderr before any heavy work where the mistake is in the arguments)."""
    parser = _parser()
    try:
        args, rest = parser.parse_known_args(argv)
    except SystemExit as done:  # --help, --version and the parsers' one-line errors
        return done.code or 0
    if args.command is None:
        parser.print_help()
        return 2
    overrides = [r for r in rest if r.startswith("--config.")]
    unknown = [r for r in rest if not r.startswith("--config.")]
    if unknown:
        return _fail(args.command, f"unrecognized arguments: {' '.join(unknown)}")
    if overrides and args.command not in ("train", "quickstart"):
        return _fail(args.command, f"--config.* overrides only apply to train and quickstart, "
                                   f"got {overrides[0]}")
    from lipxai import data
    from lipxai.train import config as config_lib
    from lipxai.train.rundir import RunNotFoundError

    try:
        return args.handler(args, overrides)
    except (config_lib.ConfigError, data.DatasetNotFoundError, data.DownloadError, RunNotFoundError,
            ImportError, UsageError) as err:
        # one line, even for messages with line breaks (tfds's split-syntax errors)
        print(f"lipxai {args.command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except FloatingPointError as err:
        from lipxai.train import TrainingDivergedError

        if not isinstance(err, TrainingDivergedError):  # e.g. JAX_DEBUG_NANS: keep the traceback
            raise
        print(f"lipxai {args.command}: error: {err}", file=sys.stderr)
        return 1


def _fail(command: str, message: str) -> int:
    """Report a bad command line in one line on stderr, as the parsers do; exit status 2."""
    print(f"lipxai {command}: error: {message} (see lipxai {command} --help)", file=sys.stderr)
    return 2


def _version() -> str:
    """The installed distribution's version (the source's ``__version__`` when not installed)."""
    from importlib import metadata

    try:
        return metadata.version("lipxai")
    except metadata.PackageNotFoundError:
        from lipxai import __version__

        return __version__


def _count(text: str) -> int:
    """An argparse type: an integer >= 1 (a number of images, draws, a batch or a top-k size)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def _seed(text: str) -> int:
    """An argparse type: an integer seed that a JAX PRNG key holds (64-bit signed)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if not -2**63 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must lie in [-2**63, 2**63), got {value}")
    return value


def _csv(values) -> str:
    """``(0.5, 1.0)`` -> ``"0.5,1.0"``, as the option is typed (for the help text)."""
    return ",".join(str(v) for v in values)


#: What ``--force`` says in each command's help.
FORCE_HELP = ("write the standard file ({}) even for a partial run (any option above that "
              "changes the result), replacing the full results that report.md describes")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lipxai", description="Explanations and certificates of 1-Lipschitz networks.")
    parser.add_argument("--version", action="version", version=f"lipxai {_version()}")
    sub = parser.add_subparsers(dest="command")

    train = sub.add_parser("train", help="train a model from a config file (resumes from the last checkpoint)",
                           epilog="Any config key can be overridden: --config.optim.lr=1e-3")
    train.add_argument("--config", required=True, help="a Python config file with get_config()")
    train.add_argument("--workdir", required=True, help="run directory (config.json, checkpoints/, metrics.jsonl)")
    train.set_defaults(handler=_train)

    cert = sub.add_parser("certify", help="certified accuracy and Lipschitz bounds of a run -> DIR/certify.json",
                          description="Certify a run. With the default options the results go to "
                                      "WORKDIR/certify.json; a partial run (another --n, --split, "
                                      "--eps, --explanation options) goes beside it, to a file named "
                                      "after what differs (certify-test-n8.json).")
    cert.add_argument("workdir")
    cert.add_argument("--eps", default=None,
                      help=f"comma-separated L2 radii (default {_csv(CERTIFY_EPS)}); with --explanation: "
                           f"L_inf radii of the explanation boxes (default {_csv(EXPLANATION_EPS)})")
    cert.add_argument("--split", default="test", help="split of the run's dataset, optionally sliced "
                                                      "(test[:1000]; default test)")
    cert.add_argument("--n", type=_count, default=None,
                      help=f"certify only the first N examples (--explanation: default {EXPLANATION_N})")
    cert.add_argument("--explanation", action="store_true",
                      help="also certify the saliency maps by interval bounds through the "
                           "backward pass (top-k, sign and L2-change certificates)")
    cert.add_argument("--k", type=_count, default=None, help=f"top-k size for --explanation (default {EXPLANATION_K})")
    cert.add_argument("--bounds", choices=BOUND_METHODS, default=None,
                      help="interval method for --explanation: ibp (default) or symbolic "
                           "(tighter; memory ~ input features x activations per image)")
    cert.add_argument("--force", action="store_true", help=FORCE_HELP.format("certify.json"))
    cert.set_defaults(handler=_certify)

    expl = sub.add_parser("explain", help="attribution maps and counterfactuals of a run -> a PNG grid",
                          description="Explain the first N images of a split: one row per method. "
                                      "Without --out, the default options write "
                                      "WORKDIR/explanations.png and others a file named after what "
                                      "differs (explanations-test-n4.png).")
    expl.add_argument("workdir")
    expl.add_argument("--method", default=",".join(DEFAULT_EXPLAIN),
                      help="comma-separated, from: " + ", ".join(EXPLAIN_METHODS)
                      + f" (default {','.join(DEFAULT_EXPLAIN)})")
    expl.add_argument("--n", type=_count, default=EXPLAIN_N, help=f"number of images (default {EXPLAIN_N})")
    expl.add_argument("--out", default=None, help="image path, in an existing folder (default "
                                                  "WORKDIR/explanations.png, see above)")
    expl.add_argument("--split", default="test", help="split of the run's dataset (default test)")
    expl.add_argument("--search", default="pgd", choices=SEARCHES,
                      help="boundary search used by bsm and big (default pgd)")
    expl.add_argument("--seed", type=_seed, default=0, help="seed of the SmoothGrad noise")
    expl.add_argument("--force", action="store_true", help=FORCE_HELP.format("explanations.png"))
    expl.set_defaults(handler=_explain)

    ev = sub.add_parser("evaluate", help="explanation metrics per method -> DIR/evaluate.{json,md} and plots",
                        description="Explain the first N images of a split (predicted class) with each "
                                    "method and score the attributions with each metric. The "
                                    "default options write WORKDIR/evaluate.{json,md} and plots; "
                                    "others write them named after what differs "
                                    "(evaluate-test-n32.json).")
    ev.add_argument("workdir")
    ev.add_argument("--methods", default=",".join(DEFAULT_EVALUATE_METHODS),
                    help="comma-separated, from: " + ", ".join(ATTRIBUTION_METHODS)
                    + f" (default {','.join(DEFAULT_EVALUATE_METHODS)})")
    ev.add_argument("--metrics", default=",".join(DEFAULT_EVALUATE_METRICS),
                    help="comma-separated, from: " + ", ".join(EVALUATE_METRICS)
                    + f" (default {','.join(DEFAULT_EVALUATE_METRICS)})")
    ev.add_argument("--n", type=_count, default=EVALUATE_N, help=f"number of images (default {EVALUATE_N})")
    ev.add_argument("--samples", type=_count, default=EVALUATE_SAMPLES,
                    help="draws of the sampled metrics (MuFidelity subsets, sensitivity and "
                         f"stability noise; default {EVALUATE_SAMPLES})")
    ev.add_argument("--batch", type=_count, default=EVALUATE_BATCH,
                    help=f"images per batch (default {EVALUATE_BATCH}; a memory knob, not part of the "
                         "file name)")
    ev.add_argument("--split", default="test", help="split of the run's dataset (default test)")
    ev.add_argument("--search", default="pgd", choices=SEARCHES,
                    help="boundary search used by bsm and big (default pgd)")
    ev.add_argument("--seed", type=_seed, default=0, help="seed of the noise and random subsets")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    ev.add_argument("--force", action="store_true", help=FORCE_HELP.format("evaluate.*"))
    ev.set_defaults(handler=_evaluate)

    quick = sub.add_parser("quickstart", help="train, certify and report a 1-Lipschitz CNN on MNIST",
                           epilog="Any key of configs/mnist_lip.py can be overridden: --config.train.num_steps=500")
    quick.add_argument("--workdir", default=os.path.join("runs", "quickstart"))
    quick.add_argument("--config", default=None, help="config file (default: configs/mnist_lip.py)")
    quick.set_defaults(handler=_quickstart)

    repro = sub.add_parser("reproduce", help="regenerate a paper's experiment -> OUT/NAME/NAME.{md,json,png}",
                           epilog="Trains what it needs once (OUT/NAME/runs), then measures it.")
    repro.add_argument("name", choices=EXPERIMENTS)
    repro.add_argument("--fast", action="store_true",
                       help="a few training steps and images: checks the pipeline, not the claims")
    repro.add_argument("--out", default="results", help="folder of the results (default: results)")
    repro.set_defaults(handler=_reproduce)

    prep = sub.add_parser("prepare-data", help="download and prepare a tfds dataset (needs lipxai[prepare])")
    prep.add_argument("name")
    prep.add_argument("--data-dir", default=None)
    prep.add_argument("--manual-dir", default=None, help="folder holding manually downloaded files")
    prep.set_defaults(handler=_prepare)
    return parser


def _load_config(path, overrides):
    from lipxai.train import config as config_lib

    return config_lib.apply_overrides(config_lib.load_config(path), overrides)


def _check_workdir(workdir: str) -> None:
    """A run directory is a folder: reject a ``--workdir`` that is a file before training."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise UsageError(f"--workdir {workdir} is a file; a run directory is a folder")


def _train(args, overrides) -> int:
    from lipxai.train import train

    _check_workdir(args.workdir)
    train(_load_config(args.config, overrides), args.workdir)
    print(f"run written to {args.workdir}")
    return 0


def _parse_eps(text: str) -> tuple[float, ...]:
    """``"0.5,1"`` -> ``(0.5, 1.0)``: finite radii >= 0; an empty item (``"0.1,"``) is an error."""
    try:
        eps = tuple(float(e) for e in text.split(","))
    except ValueError:
        raise UsageError(f"--eps must be comma-separated numbers, got {text!r}") from None
    if not all(math.isfinite(e) and e >= 0 for e in eps):
        raise UsageError(f"--eps values must be finite numbers >= 0, got {text!r}")
    return eps


def _changed(*settings) -> dict:
    """``{option: value}`` for the ``(option, value, default)`` whose value is not the default."""
    return {name: value for name, value, default in settings if value != default}


def _written(paths, standard: str | None) -> str:
    """The line that says which files were written (and, for a partial run, which were not)."""
    line = "written " + ", ".join(paths)
    if standard:
        line += f" (a partial run, so not {standard}; --force writes there)"
    return line


def _certify(args, overrides) -> int:
    if not args.explanation and (args.k is not None or args.bounds is not None):
        raise UsageError("--k and --bounds apply only with --explanation")
    default_eps = EXPLANATION_EPS if args.explanation else CERTIFY_EPS
    eps = default_eps if args.eps is None else _parse_eps(args.eps)
    k, bounds = args.k or EXPLANATION_K, args.bounds or "ibp"
    changed = _changed(("n", args.n, None), ("eps", eps, default_eps), ("k", k, EXPLANATION_K),
                       ("bounds", bounds, "ibp"))
    if args.explanation and (changed or args.split != "test"):
        changed["explanation"] = True
    stem = "certify" if args.force else result_stem("certify", args.split, changed)
    run = _existing_run(args.workdir, args.split)
    from lipxai.apps import certify, report

    result = _usage(certify.certify_run, run, eps=CERTIFY_EPS if args.explanation else eps,
                    split=args.split, n=args.n)
    print(report.certify_table(result))
    if args.explanation:
        result["explanation"] = _usage(certify.certify_explanations, run, eps, k=k, split=args.split,
                                       n=args.n or EXPLANATION_N, method=bounds)
        print(report.explanation_certify_table(result["explanation"]))
    path = report.write_certify_json(result, args.workdir, stem)
    print(_written([path], None if stem == "certify" else "certify.json"))
    return 0


def _usage(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with a ``ValueError`` reported as a bad command-line value."""
    try:
        return fn(*args, **kwargs)
    except ValueError as err:
        raise UsageError(str(err)) from None


def _existing_run(workdir: str, split: str, *, writes: bool = True):
    """The run in ``workdir`` (:func:`lipxai.load_run`) after the checks that need no JAX: a
    run folder, writable when the command ``writes`` there, whose dataset has ``split``."""
    from lipxai import data
    from lipxai.train import config as config_lib
    from lipxai.train import rundir

    if not os.path.exists(workdir):
        raise rundir.RunNotFoundError(f"workdir {workdir} does not exist")
    if not os.path.isdir(workdir):
        raise rundir.RunNotFoundError(f"workdir {workdir} is a file, not a run directory")
    if writes and not os.access(workdir, os.W_OK):
        raise UsageError(f"workdir {workdir} is not writable")
    config = os.path.join(workdir, "config.json")
    if os.path.isfile(config):
        try:
            data.check_split(config_lib.load_json(config).data.name, split)
        except ValueError as err:
            raise UsageError(f"--split: {err}") from None
        if not os.path.isdir(os.path.join(workdir, "checkpoints")):  # load_run would create it
            raise rundir.RunNotFoundError(f"{workdir} has no checkpoint yet; train it with `lipxai train`")
    return rundir.load_run(workdir)


def _check_out(path: str) -> str:
    """``path`` when a figure can be written there, checked before any work: its folder
    exists and is writable, it is no folder, and matplotlib knows its extension."""
    from lipxai.apps.report import figure_formats

    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise UsageError(f"--out {path}: the folder {folder} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"--out {path} is a folder; give a file name such as "
                         f"{os.path.join(path, 'explanations.png')}")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"--out {path}: the folder {folder} is not writable")
    formats = figure_formats()
    extension = os.path.splitext(path)[1].lstrip(".").lower()
    if extension not in formats:
        raise UsageError(f"--out {path}: the extension must be one of "
                         f"{', '.join('.' + f for f in formats)}; got {extension!r}")
    return path


def _explain(args, overrides) -> int:
    methods = _usage(parse_names, args.method, EXPLAIN_METHODS, "--method")
    standard = None
    if args.out is not None:
        out = _check_out(args.out)
    else:
        changed = _changed(("n", args.n, EXPLAIN_N), ("methods", methods, DEFAULT_EXPLAIN),
                           ("search", args.search, "pgd"), ("seed", args.seed, 0))
        stem = "explanations" if args.force else result_stem("explanations", args.split, changed)
        out = os.path.join(args.workdir, stem + ".png")
        standard = None if stem == "explanations" else "explanations.png"
    run = _existing_run(args.workdir, args.split, writes=args.out is None)
    from lipxai.apps import explain, report

    result = _usage(explain.explain_run, run, methods, n=args.n, split=args.split, seed=args.seed,
                    search=args.search)
    report.plot_explanations(out, result)
    print(_written([out], standard))
    return 0


def _evaluate(args, overrides) -> int:
    methods = _usage(parse_names, args.methods, ATTRIBUTION_METHODS, "--methods")
    metric_names = _usage(parse_names, args.metrics, EVALUATE_METRICS, "--metrics")
    changed = _changed(("n", args.n, EVALUATE_N), ("methods", methods, DEFAULT_EVALUATE_METHODS),
                       ("metrics", metric_names, DEFAULT_EVALUATE_METRICS),
                       ("samples", args.samples, EVALUATE_SAMPLES), ("search", args.search, "pgd"),
                       ("seed", args.seed, 0))
    stem = "evaluate" if args.force else result_stem("evaluate", args.split, changed)
    run = _existing_run(args.workdir, args.split)
    from lipxai.apps import evaluate, report

    result = _usage(evaluate.evaluate_run, run, methods, metric_names, n=args.n, split=args.split,
                    seed=args.seed, samples=args.samples, batch=args.batch, search=args.search,
                    progress=not args.no_progress)
    print(report.metrics_table(result))
    paths = report.write_evaluation(result, args.workdir, stem)
    print(_written(paths.values(), None if stem == "evaluate" else "evaluate.*"))
    return 0


def _quickstart(args, overrides) -> int:
    from lipxai.apps import quickstart

    _check_workdir(args.workdir)
    path = args.config or quickstart.default_config()
    config = _load_config(path, overrides)
    name = " ".join([path, *overrides])
    print(f"report written to {quickstart.quickstart(config, args.workdir, config_name=name)}")
    return 0


def _reproduce(args, overrides) -> int:
    from lipxai.apps import reproduce

    paths = reproduce.reproduce(args.name, args.out, fast=args.fast, verbose=True)
    print(f"results written to {paths['md']}")
    return 0


def _prepare(args, overrides) -> int:
    from lipxai import data

    try:
        path = data.prepare(args.name, data_dir=args.data_dir, manual_dir=args.manual_dir)
    except (ValueError, FileNotFoundError, NotADirectoryError) as err:  # name, folders
        raise UsageError(str(err)) from None
    print(f"{args.name} prepared in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
