"""lipxai: gradient-based explanations of robust and 1-Lipschitz networks, in JAX."""

from lipxai import boundary, bounds, certify, data, explain, losses, metrics, nn
from lipxai.run import Run, load_run

__version__ = "0.1.0"
__all__ = ["Run", "__version__", "boundary", "bounds", "certify", "data", "explain", "load_run", "losses", "metrics", "nn"]
