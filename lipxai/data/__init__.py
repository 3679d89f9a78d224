"""Datasets and deterministic input pipelines (host-side numpy).

The data flows through four modules:

* :mod:`~lipxai.data.catalogue`: the datasets lipxai knows (:data:`DATASETS`) and split checks;
* :mod:`~lipxai.data.tfds`: locate, read (:func:`load_split`) and prepare (:func:`prepare`)
  datasets in the tensorflow-datasets ``array_record`` format; never random or synthetic data;
* :mod:`~lipxai.data.cache`: the ``.npz`` cache of decoded splits;
* :mod:`~lipxai.data.pipeline`: :func:`preprocess` and the deterministic, shardable, resumable
  batches (:func:`batches`, :func:`batch_for_step`), with the input normalisation of
  :mod:`~lipxai.data.normalization` (:func:`normalize`, also used by a trained run's ``apply``).

tensorflow-datasets and pillow are imported only when a dataset is located, read or prepared.
"""

from lipxai.data.cache import default_cache_dir
from lipxai.data.catalogue import DATASETS, DatasetSpec, check_split
from lipxai.data.normalization import normalize
from lipxai.data.pipeline import batch_for_step, batches, preprocess, process_shard, steps_per_epoch
from lipxai.data.tfds import (
    DatasetNotFoundError,
    DownloadError,
    find_prepared,
    load_split,
    prepare,
)

__all__ = [
    "DATASETS",
    "DatasetNotFoundError",
    "DatasetSpec",
    "DownloadError",
    "batch_for_step",
    "batches",
    "check_split",
    "default_cache_dir",
    "find_prepared",
    "load_split",
    "normalize",
    "prepare",
    "preprocess",
    "process_shard",
    "steps_per_epoch",
]
