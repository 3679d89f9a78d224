"""lipxai: gradient-based explanations of robust and 1-Lipschitz networks, in JAX."""

from lipxai import certify, losses, nn

__version__ = "0.1.0"
__all__ = ["__version__", "certify", "losses", "nn"]
