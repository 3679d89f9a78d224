"""The names the ``lipxai`` command accepts and its defaults, importable without JAX (so that
``lipxai --help`` stays fast), and the file names of a command's results."""

from __future__ import annotations

import re

#: The quickstart's config, in the repository's ``configs/`` folder.
QUICKSTART_CONFIG = "mnist_lip.py"

#: Defaults of the options that decide whether a command's results are the standard files.
CERTIFY_EPS = (0.5, 1.0, 1.58)
EXPLANATION_EPS = (0.001, 0.01)
EXPLANATION_K = 20
EXPLANATION_N = 256
EXPLAIN_N = 16
EVALUATE_N = 256
EVALUATE_SAMPLES = 20
EVALUATE_BATCH = 64

#: ``lipxai explain --method`` choices (described in :data:`lipxai.apps.explain.DESCRIPTIONS`).
EXPLAIN_METHODS = ("saliency", "gradient_x_input", "ig", "idgi", "smoothgrad", "vargrad", "gradcam",
                   "gradcam++", "bsm", "big", "counterfactual")
DEFAULT_EXPLAIN = ("saliency", "ig", "smoothgrad", "big", "counterfactual")
#: ``lipxai evaluate --methods`` choices: the methods that produce attribution maps
#: (``counterfactual`` produces images).
ATTRIBUTION_METHODS = tuple(m for m in EXPLAIN_METHODS if m != "counterfactual")
#: ``lipxai evaluate --metrics`` choices (the keys of :data:`lipxai.apps.evaluate.METRICS`).
EVALUATE_METRICS = ("deletion", "insertion", "pixel_flipping", "mufidelity", "infidelity",
                    "completeness", "sparseness", "complexity", "max_sensitivity",
                    "avg_sensitivity", "local_lipschitz", "stability")
DEFAULT_EVALUATE_METHODS = ("saliency", "ig", "smoothgrad", "big")
DEFAULT_EVALUATE_METRICS = ("deletion", "insertion", "mufidelity", "sparseness", "max_sensitivity",
                            "stability")
#: ``--search`` choices: the boundary search of ``bsm`` and ``big`` (:func:`lipxai.boundary.search`).
SEARCHES = ("pgd", "deepfool", "cw", "transport", "all")
#: ``lipxai certify --explanation --bounds`` choices (:data:`lipxai.apps.certify.BOUND_METHODS`).
BOUND_METHODS = ("ibp", "symbolic")
#: The experiments of ``lipxai reproduce`` (:mod:`lipxai.apps.reproduce`).
EXPERIMENTS = ("certified_explanations", "scaat", "lipschitz_saliency", "boundary_attributions")


def parse_names(text: str, known, option: str) -> tuple[str, ...]:
    """``"a,b"`` -> ``("a", "b")``; an empty list or item (``"a,"``), a name not in ``known``
    and a repeated name are a ``ValueError`` that names the command-line ``option``."""
    names = tuple(m.strip() for m in text.split(","))
    if not all(m in known for m in names):
        raise ValueError(f"{option} takes a comma-separated list of {', '.join(known)}; got {text!r}")
    repeated = sorted({m for m in names if names.count(m) > 1})
    if repeated:
        raise ValueError(f"{option} lists {', '.join(repeated)} more than once; got {text!r}")
    return names


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
