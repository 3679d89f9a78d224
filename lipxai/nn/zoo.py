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
    """A standard (not Lipschitz-constrained) CNN, the reference point for comparisons:
    [Conv3x3(c) -> ReLU -> MaxPool(2)] per c, Flatten, [Dense(h) -> ReLU] per h, Dense.

    The max-pool is :func:`lipxai.nn.max_pool` (flax's ``nn.max_pool`` output and gradient,
    with a gradient much faster on CPU)."""

    num_classes: int = 10
    channels: tuple = (32, 64)
    dense: tuple = (128,)

    @nn.compact
    def __call__(self, x):
        for c in self.channels:
            x = max_pool(nn.relu(nn.Conv(c, (3, 3))(x)), (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)
        for h in self.dense:
            x = nn.relu(nn.Dense(h)(x))
        return nn.Dense(self.num_classes)(x)


def unconstrained_cnn(num_classes: int = 10, channels=(32, 64), dense=(128,)) -> nn.Module:
    """The conv32-conv64-dense128 CNN without Lipschitz constraints (:class:`UnconstrainedCNN`)."""
    return UnconstrainedCNN(num_classes, tuple(channels), tuple(dense))
