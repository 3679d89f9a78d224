"""lipxai: gradient-based explanations of robust and 1-Lipschitz networks, in JAX.

``lipxai.train`` (and with it ``Run`` and ``load_run``, from :mod:`lipxai.train.rundir`) is
imported on first use: it pulls orbax, which ``import lipxai`` does not need.
"""

import importlib

from lipxai import boundary, bounds, certify, data, explain, losses, metrics, nn

__version__ = "0.1.0"
__all__ = ["Run", "__version__", "boundary", "bounds", "certify", "data", "explain", "load_run", "losses",
           "metrics", "nn", "train"]

#: The names imported on first use (module ``__getattr__``, PEP 562): name -> (module, attribute).
_LAZY = {"train": ("lipxai.train", None), "Run": ("lipxai.train.rundir", "Run"),
         "load_run": ("lipxai.train.rundir", "load_run")}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'lipxai' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = importlib.import_module(module)
    return value if attribute is None else getattr(value, attribute)


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
