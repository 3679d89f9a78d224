"""The datasets lipxai knows: their tfds names, image shapes, classes and labelled splits.

The catalogue is plain data: reading it needs neither tensorflow-datasets nor any file.
"""

from __future__ import annotations

import dataclasses

__all__ = ["DATASETS", "DatasetSpec", "check_split", "dataset_spec"]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A dataset known to lipxai.

    Attributes:
      name: the tfds name.
      image_shape: ``(H, W, C)`` of the images returned by :func:`lipxai.data.load_split`.
      num_classes: number of label classes (labels lie in ``[0, num_classes)``).
      splits: the labelled splits that may be read.
      manual_download: the source files must be downloaded by hand (see ``manual_instructions``).
      variable_size: the stored images have varying sizes; :func:`lipxai.data.load_split` resizes
        the shorter side to ``round(H / 0.875)`` (bicubic) and center-crops to ``image_shape``.
      manual_instructions: how to obtain the source files when ``manual_download``.
    """

    name: str
    image_shape: tuple[int, int, int]
    num_classes: int
    splits: tuple[str, ...]
    manual_download: bool = False
    variable_size: bool = False
    manual_instructions: str = ""


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec("mnist", (28, 28, 1), 10, ("train", "test")),
    "fashion_mnist": DatasetSpec("fashion_mnist", (28, 28, 1), 10, ("train", "test")),
    "cifar10": DatasetSpec("cifar10", (32, 32, 3), 10, ("train", "test")),
    "cifar100": DatasetSpec("cifar100", (32, 32, 3), 100, ("train", "test")),
    "imagenet2012": DatasetSpec(
        "imagenet2012",
        (224, 224, 3),
        1000,
        ("train", "validation"),
        manual_download=True,
        variable_size=True,
        manual_instructions=(
            "ImageNet (ILSVRC 2012) cannot be downloaded automatically: register at "
            "https://image-net.org/download-images, download ILSVRC2012_img_train.tar and "
            "ILSVRC2012_img_val.tar into a folder DIR (about 150 GB), then run "
            "`lipxai prepare-data imagenet2012 --manual-dir DIR` (or call "
            "lipxai.data.prepare('imagenet2012', manual_dir=DIR))."
        ),
    ),
}


def dataset_spec(name) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name``; ``ValueError`` naming the known datasets otherwise."""
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"name must be one of {sorted(DATASETS)}, got {name!r}")
    return DATASETS[name]


def check_split(name: str, split) -> str:
    """Validate a split of dataset ``name``: a split name, a tfds slice (``train[:10%]``) or a
    ``+`` union; return it, or raise ``ValueError`` naming the split and the valid names."""
    spec = dataset_spec(name)
    if not isinstance(split, str) or not split.strip():
        raise ValueError(f"split must be a non-empty string, got {split!r}")
    for part in split.split("+"):
        base = part.split("[", 1)[0].strip()
        if base not in spec.splits:
            raise ValueError(
                f"split {split!r} is unknown for dataset {spec.name!r}: the split name must be one "
                f"of {', '.join(spec.splits)} (optionally sliced, e.g. '{spec.splits[0]}[:1000]')"
            )
    return split
