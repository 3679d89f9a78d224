"""1-Lipschitz building blocks: pure reparametrisations and Flax linen modules."""

from lipxai.nn import reparam, zoo
from lipxai.nn.activations import FullSort, GroupSort, Householder, MaxMin, group_sort
from lipxai.nn.centering import BatchCentering, LayerCentering
from lipxai.nn.conv import CONV_METHODS, OrthoConv
from lipxai.nn.dense import DENSE_METHODS, OrthoDense
from lipxai.nn.export import export
from lipxai.nn.pooling import (
    Flatten,
    GlobalL2NormPool,
    InvertibleDownsample,
    L2NormPool,
    max_pool,
)
from lipxai.nn.residual import SLLConv, SLLDense

__all__ = [
    "CONV_METHODS",
    "DENSE_METHODS",
    "BatchCentering",
    "Flatten",
    "FullSort",
    "GlobalL2NormPool",
    "GroupSort",
    "Householder",
    "InvertibleDownsample",
    "L2NormPool",
    "LayerCentering",
    "MaxMin",
    "OrthoConv",
    "OrthoDense",
    "SLLConv",
    "SLLDense",
    "export",
    "group_sort",
    "max_pool",
    "reparam",
    "zoo",
]
