"""``OrthoDense``: a dense layer whose kernel is reparametrised to be 1-Lipschitz."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lipxai.nn import reparam
from lipxai.nn._common import check_features_input, check_method, check_sizes

DENSE_METHODS = ("bjorck", "spectral", "aol", "cayley")
STATE = "lipschitz_state"


def dense_kernel(method: str, raw: jax.Array, in_features: int, features: int, *,
                 iters: int, u: jax.Array | None = None, power_iters: int = 1):
    """The effective ``[in, out]`` kernel of ``OrthoDense``; returns ``(kernel, new_u)``.

    For ``method="spectral"``, ``u`` given means training: divide by the
    power-iteration estimate and return the continued vector as ``new_u``;
    ``u=None`` means evaluation: divide by the exact spectral norm (SVD), so the
    evaluated layer is 1-Lipschitz whatever the state. ``new_u`` is ``None``
    otherwise.
    """
    if method == "bjorck":
        return reparam.bjorck(raw, iters=iters), None
    if method == "aol":
        return reparam.aol_dense(raw), None
    if method == "cayley":
        return reparam.cayley(raw, in_features, features), None
    if u is None:
        return raw / jnp.linalg.norm(raw, ord=2), None
    sigma, new_u = reparam.power_iteration(raw, u, iters=power_iters)
    return raw / sigma, new_u


class OrthoDense(nn.Module):
    """Dense layer ``y = x W + b`` with ``||W||_2 <= 1``.

    Methods:
      * ``"bjorck"``: orthogonal polar factor by Björck iterations (Anil et al. 2019);
        gradient-norm preserving on square shapes.
      * ``"spectral"``: ``W / sigma`` (Miyato et al. 2018). In training — the
        ``"lipschitz_state"`` collection passed as mutable — ``sigma`` is the cheap
        power-iteration estimate, its vector kept as state and advanced
        ``power_iters`` steps per call. That estimate is a *lower* bound and lags
        when the spectrum is flat (e.g. from an orthogonal init), so in
        evaluation and in ``export`` ``sigma`` is the exact norm (SVD): the model
        that is certified is exactly 1-Lipschitz.
      * ``"aol"``: AOL rescaling (Prach & Lampert 2022), a guaranteed bound.
      * ``"cayley"``: exactly orthogonal via the Cayley transform of a skew matrix.
    """

    features: int
    use_bias: bool = True
    method: str = "bjorck"
    iters: int = 15
    power_iters: int = 1
    bias_init: nn.initializers.Initializer = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_method("OrthoDense", self.method, DENSE_METHODS)
        check_sizes("OrthoDense", features=self.features, iters=self.iters,
                    power_iters=self.power_iters)
        check_features_input("OrthoDense", x, min_rank=1)
        in_features = x.shape[-1]
        if self.method == "cayley":
            n = max(in_features, self.features)
            raw = self.param("kernel", nn.initializers.normal(0.5 / n**0.5), (n, n))
        else:
            raw = self.param("kernel", nn.initializers.orthogonal(), (in_features, self.features))
        u = None
        if self.method == "spectral":
            u_var = self.variable(STATE, "u", reparam.top_right_singular_vector, raw)
            training = self.is_mutable_collection(STATE) and not self.is_initializing()
            u = u_var.value if training else None
        kernel, new_u = dense_kernel(self.method, raw, in_features, self.features,
                                     iters=self.iters, u=u, power_iters=self.power_iters)
        if new_u is not None:
            u_var.value = new_u
        y = jnp.dot(x, kernel.astype(x.dtype))
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,)).astype(x.dtype)
        return y

    @nn.nowrap
    def export_plain(self, variables, input_shape=None):
        """A plain ``flax.linen.Dense`` with the frozen effective kernel."""
        params = variables["params"]
        raw = params["kernel"]
        in_features = raw.shape[0] if self.method != "cayley" else None
        if self.method == "cayley":
            if input_shape is None:
                raise ValueError("export of OrthoDense(method='cayley') needs input_shape "
                                 "(its parameter is square, the input width is not stored)")
            in_features = input_shape[-1]
        kernel, _ = dense_kernel(self.method, raw, in_features, self.features, iters=self.iters)
        plain = nn.Dense(self.features, use_bias=self.use_bias)
        plain_params = {"kernel": kernel}
        if self.use_bias:
            plain_params["bias"] = params["bias"]
        return plain, {"params": plain_params}
