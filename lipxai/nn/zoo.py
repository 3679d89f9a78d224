"""Reference 1-Lipschitz architectures (``flax.linen.Sequential`` of lipxai layers)."""

from __future__ import annotations

import flax.linen as nn

from lipxai._core.checks import one_of
from lipxai.nn.activations import GroupSort
from lipxai.nn.conv import OrthoConv
from lipxai.nn.dense import OrthoDense
from lipxai.nn.pooling import Flatten, L2NormPool, max_pool
from lipxai.nn.residual import SLLConv


def mlp(num_classes: int = 10, hidden=(256, 256), *, method: str = "bjorck",
        group_size: int = 2) -> nn.Sequential:
    """Flatten -> [OrthoDense(h) -> GroupSort] * len(hidden) -> OrthoDense(num_classes)."""
    layers = [Flatten()]
    for h in hidden:
        layers += [OrthoDense(h, method=method), GroupSort(group_size)]
    layers.append(OrthoDense(num_classes, method=method))
    return nn.Sequential(layers)


def cnn(num_classes: int = 10, channels=(32, 64), dense=(128,), *, conv_method: str = "aol",
        dense_method: str = "bjorck", group_size: int = 2, downsample: str = "pool") -> nn.Sequential:
    """The 28x28 CNN: convolution blocks that halve the image, then dense layers.

    ``downsample="pool"`` (default): every block is OrthoConv3x3(c) -> GroupSort -> L2NormPool(2),
    and the defaults give conv32-conv64-dense128-dense10.

    ``downsample="patch"``: the first block as above; every later block is a 2x2 stride-2
    ``OrthoConv(c, method="rko")`` -> GroupSort. Its patches do not overlap, so the convolution
    is the orthonormalised ``[4 c_in, c]`` kernel applied to each patch: exactly orthogonal
    (coverage 1 in :func:`lipxai.nn.reparam.rko_conv`) and, with ``c <= 4 c_in``,
    gradient-norm preserving like the Björck dense layers (Anil, Lucas & Grosse 2019). A 3x3
    convolution into more channels is not: its backward pass drops the part of the gradient
    outside its range. Serrurier et al. 2023 (OTNN) derive the transport direction of the
    gradient for networks whose gradient norm is 1.
    """
    one_of("downsample", downsample, ("pool", "patch"))
    layers = []
    for i, c in enumerate(channels):
        if i and downsample == "patch":
            layers += [OrthoConv(c, 2, strides=2, padding="VALID", method="rko"), GroupSort(group_size)]
        else:
            layers += [OrthoConv(c, 3, method=conv_method), GroupSort(group_size), L2NormPool(2)]
    layers.append(Flatten())
    for h in dense:
        layers += [OrthoDense(h, method=dense_method), GroupSort(group_size)]
    layers.append(OrthoDense(num_classes, method=dense_method))
    return nn.Sequential(layers)


def liresnet(num_classes: int = 10, width: int = 64, depth: int = 6, *, head: int = 512,
             pool: int = 4, conv_method: str = "aol", group_size: int = 2) -> nn.Sequential:
    """A LiResNet/SLL-style residual CNN for 32x32 and larger images.

    Stem ``OrthoConv(width)`` -> ``depth`` SLL residual convolutions -> L2 pooling
    by ``pool`` -> OrthoDense(head) -> GroupSort -> OrthoDense(num_classes)
    (Hu et al. 2023, "Unlocking deterministic robustness certification on
    ImageNet"; Araujo et al. 2023 for the residual block).
    """
    layers = [OrthoConv(width, 3, method=conv_method), GroupSort(group_size)]
    layers += [SLLConv() for _ in range(depth)]
    layers += [L2NormPool(pool), Flatten(), OrthoDense(head), GroupSort(group_size),
               OrthoDense(num_classes)]
    return nn.Sequential(layers)


class UnconstrainedCNN(nn.Module):
    """A standard (not Lipschitz-constrained) ReLU CNN, the reference point for comparisons:
    [Conv(c, kernel k, stride s) -> ReLU (-> MaxPool(2))] per c, Flatten, [Dense(h) -> ReLU] per
    h, Dense.

    The max-pool is :func:`lipxai.nn.max_pool` (flax's ``nn.max_pool`` output and gradient,
    with a gradient much faster on CPU)."""

    num_classes: int = 10
    channels: tuple = (32, 64)
    dense: tuple = (128,)
    kernel_sizes: tuple = (3, 3)
    strides: tuple = (1, 1)
    padding: str = "SAME"
    pool: bool = True

    @nn.compact
    def __call__(self, x):
        for c, k, s in zip(self.channels, self.kernel_sizes, self.strides, strict=True):
            x = nn.relu(nn.Conv(c, (k, k), strides=(s, s), padding=self.padding)(x))
            if self.pool:
                x = max_pool(x, (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)
        for h in self.dense:
            x = nn.relu(nn.Dense(h)(x))
        return nn.Dense(self.num_classes)(x)

    def export_plain(self, variables, input_shape=None):
        """Already plain (no reparametrised layer): itself and its parameters, for
        :func:`lipxai.nn.export`."""
        return self, {"params": variables["params"]}


def unconstrained_cnn(num_classes: int = 10, channels=(32, 64), dense=(128,), *, kernel_sizes=None,
                      strides=None, padding: str = "SAME", pool: bool = True) -> nn.Module:
    """A ReLU CNN without Lipschitz constraints (:class:`UnconstrainedCNN`); ``kernel_sizes`` and
    ``strides`` give one int per convolution (default 3 and 1).

    The defaults are the conv32-conv64-dense128 CNN with 3x3 SAME convolutions, each followed by
    2x2 max-pooling.  Wicker et al.'s CNN ("Robust explanation constraints for neural networks",
    ICLR 2023), conv16 (k4, s2) -> conv32 (k4, s1) -> fc100 -> fc10 on 28x28 images, is
    ``unconstrained_cnn(10, (16, 32), (100,), kernel_sizes=(4, 4), strides=(2, 1),
    padding="VALID", pool=False)``.
    """
    channels = tuple(channels)
    kernel_sizes = tuple(kernel_sizes) if kernel_sizes is not None else (3,) * len(channels)
    strides = tuple(strides) if strides is not None else (1,) * len(channels)
    if not len(kernel_sizes) == len(strides) == len(channels):
        raise ValueError(f"kernel_sizes and strides must have one entry per channel count "
                         f"({len(channels)}), got {kernel_sizes} and {strides}")
    one_of("padding", padding, ("SAME", "VALID"))
    return UnconstrainedCNN(num_classes, channels, tuple(dense), kernel_sizes, strides, padding, bool(pool))


def unconstrained_mlp(num_classes: int = 10, hidden=(128,)) -> nn.Sequential:
    """Flatten -> [Dense(h) -> ReLU] * len(hidden) -> Dense(num_classes), without constraints.
    The default is Wicker et al.'s (ICLR 2023) fully connected network 784-128-10 on 28x28 images."""
    layers = [Flatten()]
    for h in hidden:
        layers += [nn.Dense(h), nn.relu]
    layers.append(nn.Dense(num_classes))
    return nn.Sequential(layers)
