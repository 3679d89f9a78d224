"""lipxai: gradient-based explanations of robust and 1-Lipschitz networks, in JAX."""

from lipxai import boundary, certify, data, explain, losses, nn
from lipxai.run import Run, load_run

__version__ = "0.1.0"
__all__ = ["Run", "__version__", "boundary", "certify", "data", "explain", "load_run", "losses", "nn"]
