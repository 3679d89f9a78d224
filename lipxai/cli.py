"""The ``lipxai`` command: train, certify, explain, evaluate, quickstart, prepare-data."""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time

QUICKSTART_CONFIG = "mnist_lip.py"
#: Defaults of the options that decide whether a command's results are the standard files.
CERTIFY_EPS = (0.5, 1.0, 1.58)
EXPLANATION_EPS = (0.001, 0.01)
EXPLANATION_K = 20
EXPLAIN_N = 16
EVALUATE_N = 256
EVALUATE_SAMPLES = 20
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
    from lipxai import config as config_lib
    from lipxai import data
    from lipxai.run import RunNotFoundError

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
                      help="certify only the first N examples (--explanation: default 256)")
    cert.add_argument("--explanation", action="store_true",
                      help="also certify the saliency maps by interval bounds through the "
                           "backward pass (top-k, sign and L2-change certificates)")
    cert.add_argument("--k", type=_count, default=None, help=f"top-k size for --explanation (default {EXPLANATION_K})")
    cert.add_argument("--bounds", choices=("ibp", "symbolic"), default=None,
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
    expl.add_argument("--search", default="pgd", choices=("pgd", "deepfool", "cw", "transport", "all"),
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
                    help="comma-separated, from: " + ", ".join(m for m in EXPLAIN_METHODS if m != "counterfactual")
                    + f" (default {','.join(DEFAULT_EVALUATE_METHODS)})")
    ev.add_argument("--metrics", default=",".join(DEFAULT_EVALUATE_METRICS),
                    help="comma-separated, from: " + ", ".join(EVALUATE_METRICS)
                    + f" (default {','.join(DEFAULT_EVALUATE_METRICS)})")
    ev.add_argument("--n", type=_count, default=EVALUATE_N, help=f"number of images (default {EVALUATE_N})")
    ev.add_argument("--samples", type=_count, default=EVALUATE_SAMPLES,
                    help="draws of the sampled metrics (MuFidelity subsets, sensitivity and "
                         f"stability noise; default {EVALUATE_SAMPLES})")
    ev.add_argument("--batch", type=_count, default=64,
                    help="images per batch (default 64; a memory knob, not part of the file name)")
    ev.add_argument("--split", default="test", help="split of the run's dataset (default test)")
    ev.add_argument("--search", default="pgd", choices=("pgd", "deepfool", "cw", "transport", "all"),
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

    prep = sub.add_parser("prepare-data", help="download and prepare a tfds dataset (needs lipxai[prepare])")
    prep.add_argument("name")
    prep.add_argument("--data-dir", default=None)
    prep.add_argument("--manual-dir", default=None, help="folder holding manually downloaded files")
    prep.set_defaults(handler=_prepare)
    return parser


def _load_config(path, overrides):
    from lipxai import config as config_lib

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


def _slug(text: str) -> str:
    """``text`` with the characters that do not belong in a file name replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9.+_-]+", "_", text).strip("_")


def _tag(option: str, value) -> str:
    """A file-name tag for a changed option: ``n8``, ``eps0.25_2.0``, ``ig_saliency``, ``cw``,
    ``explanation`` (numbers keep their option's name, names stand for themselves)."""
    if value is True:
        return option
    values = value if isinstance(value, tuple) else (value,)
    text = _slug("_".join(str(v) for v in values))
    return text if all(isinstance(v, str) for v in values) else option + text


def result_stem(base: str, split: str, changed: dict) -> str:
    """The file stem of a command's results: ``base`` (the standard file that the quickstart
    writes and report.md describes) for a full run, i.e. the test split and no ``changed``
    option; else ``base-SPLIT`` and a tag per changed option (``certify-test-n8``,
    ``evaluate-test-n32-samples5``), so that a partial run never replaces the full results."""
    if split == "test" and not changed:
        return base
    return "-".join([base, _slug(split), *(_tag(name, value) for name, value in changed.items())])


def _written(paths, standard: str | None) -> str:
    """The line that says which files were written (and, for a partial run, which were not)."""
    line = "written " + ", ".join(paths)
    if standard:
        line += f" (a partial run, so not {standard}; --force writes there)"
    return line


def _certify(args, overrides) -> int:
    from lipxai.run_certify import certify_run, format_table, write_certify_json

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
    result, *_ = _usage(certify_run, run, eps=CERTIFY_EPS if args.explanation else eps,
                        split=args.split, n=args.n)
    print(format_table(result))
    if args.explanation:
        from lipxai.run_certify import certify_explanations, format_explanation_table

        result["explanation"] = _usage(certify_explanations, run, eps, k=k, split=args.split,
                                       n=args.n or 256, method=bounds)
        print(format_explanation_table(result["explanation"]))
    path = write_certify_json(result, args.workdir, stem)
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
    from lipxai import config as config_lib
    from lipxai import data
    from lipxai.run import RunNotFoundError, load_run

    if not os.path.exists(workdir):
        raise RunNotFoundError(f"workdir {workdir} does not exist")
    if not os.path.isdir(workdir):
        raise RunNotFoundError(f"workdir {workdir} is a file, not a run directory")
    if writes and not os.access(workdir, os.W_OK):
        raise UsageError(f"workdir {workdir} is not writable")
    config = os.path.join(workdir, "config.json")
    if os.path.isfile(config):
        try:
            data.check_split(config_lib.load_json(config).data.name, split)
        except ValueError as err:
            raise UsageError(f"--split: {err}") from None
        if not os.path.isdir(os.path.join(workdir, "checkpoints")):  # load_run would create it
            raise RunNotFoundError(f"{workdir} has no checkpoint yet; train it with `lipxai train`")
    return load_run(workdir)


def _check_out(path: str) -> str:
    """``path`` when a figure can be written there, checked before any work: its folder
    exists and is writable, it is no folder, and matplotlib knows its extension."""
    from matplotlib.backend_bases import FigureCanvasBase

    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise UsageError(f"--out {path}: the folder {folder} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"--out {path} is a folder; give a file name such as "
                         f"{os.path.join(path, 'explanations.png')}")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"--out {path}: the folder {folder} is not writable")
    formats = FigureCanvasBase.get_supported_filetypes()
    extension = os.path.splitext(path)[1].lstrip(".").lower()
    if extension not in formats:
        raise UsageError(f"--out {path}: the extension must be one of "
                         f"{', '.join('.' + f for f in sorted(formats))}; got {extension!r}")
    return path


def _explain(args, overrides) -> int:
    from lipxai.run_explain import explain_run, parse_methods, plot_explanations

    methods = _usage(parse_methods, args.method)
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
    result = _usage(explain_run, run, methods, n=args.n, split=args.split, seed=args.seed,
                    search=args.search)
    plot_explanations(out, result)
    print(_written([out], standard))
    return 0


def _evaluate(args, overrides) -> int:
    from lipxai.run_evaluate import (ATTRIBUTION_METHODS, METRICS, evaluate_run, format_table,
                                     parse_names, write_evaluation)

    methods = _usage(parse_names, args.methods, ATTRIBUTION_METHODS, "--methods")
    metric_names = _usage(parse_names, args.metrics, METRICS, "--metrics")
    changed = _changed(("n", args.n, EVALUATE_N), ("methods", methods, DEFAULT_EVALUATE_METHODS),
                       ("metrics", metric_names, DEFAULT_EVALUATE_METRICS),
                       ("samples", args.samples, EVALUATE_SAMPLES), ("search", args.search, "pgd"),
                       ("seed", args.seed, 0))
    stem = "evaluate" if args.force else result_stem("evaluate", args.split, changed)
    run = _existing_run(args.workdir, args.split)
    result = _usage(evaluate_run, run, methods, metric_names, n=args.n, split=args.split,
                    seed=args.seed, samples=args.samples, batch=args.batch, search=args.search,
                    progress=not args.no_progress)
    print(format_table(result))
    paths = write_evaluation(result, args.workdir, stem)
    print(_written(paths.values(), None if stem == "evaluate" else "evaluate.*"))
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

    _check_workdir(args.workdir)
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
              flush=True)  # stdout: stderr is left to a failure's one line
        data.prepare(name, data_dir=data_dir)


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
