"""Datasets and deterministic input pipelines (host-side numpy).

Reading
    :func:`load_split` reads a whole split of a dataset prepared by tensorflow-datasets in the
    ``array_record`` format with :func:`tensorflow_datasets.data_source` (no TensorFlow needed;
    pillow decodes the images) and returns ``(images uint8 [N, H, W, C], labels int32 [N])``.
    Decoding is record by record and slow (about 1.3 s for the 10k MNIST test images and 5 s
    for the 60k training images on one CPU core), so the decoded arrays are cached as an
    ``.npz`` file (read back in about 0.05 s) and verified against the record count and the
    sizes of the source files before use.

    A dataset that is not prepared raises :class:`DatasetNotFoundError` (a
    ``FileNotFoundError``) that says how to get it. This module never substitutes random or
    synthetic data.

Preparing
    :func:`prepare` downloads and prepares a dataset with tfds (``file_format="array_record"``).
    With tensorflow-datasets 4.9.x this step imports TensorFlow, which is therefore only in the
    optional extra ``pip install "lipxai[prepare]"``; reading prepared data never needs it.

Batching
    :func:`batches` / :func:`batch_for_step` form a deterministic, seedable, shardable and
    resumable stream of batches. Conventions:

    * ``batch_size`` is the **per-shard** batch (what one host feeds its local devices). The
      *global* batch of a step is ``batch_size * num_shards`` consecutive entries of the epoch's
      permutation; shard ``s`` takes entries ``[s * batch_size, (s + 1) * batch_size)`` of it,
      so the shards of a step are disjoint and together form the global batch.
    * The permutation of epoch ``e`` is ``np.random.default_rng((seed, e)).permutation(n)``
      (the identity when ``shuffle=False``): a pure function of ``(seed, epoch)``.
    * Steps are counted globally from 0: global step ``k`` belongs to epoch
      ``k // steps_per_epoch`` at position ``k % steps_per_epoch``. A training loop restarted at
      step ``k`` gets exactly the batches of an uninterrupted run with ``start_step=k`` (or by
      calling :func:`batch_for_step` with ``step=k, k+1, ...``).
    * With ``drop_remainder=False`` the last global batch of an epoch is partial; it is split
      into ``num_shards`` contiguous parts whose sizes differ by at most one (a shard may get an
      empty batch when fewer examples than shards remain). Use ``drop_remainder=True`` (the
      default) for multi-host training so that every shard has a full, equal batch.
    * For one shard per host use ``shard_index, num_shards = process_shard()``
      (``jax.process_index(), jax.process_count()``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import numbers
import os
import pathlib
import re
import stat
import time
import uuid
import zipfile
from collections.abc import Iterator, Sequence

import numpy as np

from lipxai._core import checks as _checks

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
    "prepare",
    "preprocess",
    "process_shard",
    "steps_per_epoch",
]

_log = logging.getLogger(__name__)

_CACHE_FORMAT = 1
_DECODE_CHUNK = 2048


# --------------------------------------------------------------------------------------------
# Catalogue
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A dataset known to lipxai.

    Attributes:
      name: the tfds name.
      image_shape: ``(H, W, C)`` of the images returned by :func:`load_split`.
      num_classes: number of label classes (labels lie in ``[0, num_classes)``).
      splits: the labelled splits that may be read.
      manual_download: the source files must be downloaded by hand (see ``manual_instructions``).
      variable_size: the stored images have varying sizes; :func:`load_split` resizes the
        shorter side to ``round(H / 0.875)`` (bicubic) and center-crops to ``image_shape``.
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


def _spec(name) -> DatasetSpec:
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"name must be one of {sorted(DATASETS)}, got {name!r}")
    return DATASETS[name]


def check_split(name: str, split) -> str:
    """Validate a split of dataset ``name``: a split name, a tfds slice (``train[:10%]``) or a
    ``+`` union; return it, or raise ``ValueError`` naming the split and the valid names."""
    spec = _spec(name)
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


# --------------------------------------------------------------------------------------------
# Locating prepared data
# --------------------------------------------------------------------------------------------


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is not prepared (in the array_record format) in any searched directory."""

    def __init__(self, message: str, *, name: str, searched: Sequence[str]):
        super().__init__(message)
        self.name = name
        self.searched = tuple(searched)


class DownloadError(OSError):
    """:func:`prepare` could not download or prepare a dataset (no network, DNS, an HTTP error);
    the message says what failed and how to prepare it from manually downloaded files."""


def _search_dirs(data_dir) -> list[tuple[pathlib.Path, str]]:
    """The directories to search, each with where it came from."""
    if data_dir is not None:
        if not isinstance(data_dir, (str, os.PathLike)):
            raise TypeError(f"data_dir must be a path or None, got {type(data_dir).__name__}")
        return [(pathlib.Path(data_dir).expanduser(), "data_dir argument")]
    env = os.environ.get("TFDS_DATA_DIR")
    if env:
        return [(pathlib.Path(env).expanduser(), "TFDS_DATA_DIR")]
    from tensorflow_datasets.core.utils import file_utils

    return [
        (pathlib.Path(os.fspath(d)).expanduser(), "tfds default")
        for d in file_utils.list_data_dirs()
    ]


def _target_data_dir(data_dir) -> pathlib.Path:
    """Where :func:`prepare` writes: ``data_dir``, else ``$TFDS_DATA_DIR``, else tfds's default."""
    if data_dir is not None:
        return _search_dirs(data_dir)[0][0]
    env = os.environ.get("TFDS_DATA_DIR")
    if env:
        return pathlib.Path(env).expanduser()
    from tensorflow_datasets.core import constants

    return pathlib.Path(constants.get_default_data_dir()).expanduser()


def _has_array_record(builder) -> bool:
    from tensorflow_datasets.core import file_adapters

    info = builder.info
    formats = {info.file_format, *getattr(info, "alternative_file_formats", ())}
    return file_adapters.FileFormat.ARRAY_RECORD in formats


def _not_found_message(spec: DatasetSpec, version, searched, wrong_format) -> str:
    where = "; ".join(f"{d} ({origin})" for d, origin in searched)
    if wrong_format:
        found = (
            f"Dataset {spec.name!r} (version {version}) is prepared in {', '.join(wrong_format)} "
            "but not in the array_record format that lipxai reads with tfds.data_source "
            f"(searched: {where})."
        )
    else:
        found = (
            f"Dataset {spec.name!r} (version {version}) is not prepared in any searched "
            f"directory (searched: {where})."
        )
    if spec.manual_download:
        how = spec.manual_instructions
    else:
        how = (
            f"To get it, run `lipxai prepare-data {spec.name}` (downloads and prepares it in the "
            'TFDS data directory; needs TensorFlow: pip install "lipxai[prepare]"), or call '
            f"lipxai.data.prepare({spec.name!r}, data_dir=...), or set TFDS_DATA_DIR (or pass "
            "data_dir=) to a folder that already holds the prepared array_record files."
        )
    return f"{found} {how} lipxai never substitutes random or synthetic data."


def _find_builder(spec: DatasetSpec, data_dir):
    """The tfds builder of the first searched directory where ``spec`` is prepared."""
    import tensorflow_datasets as tfds

    searched = _search_dirs(data_dir)
    wrong_format = []
    version = None
    for directory, _ in searched:
        builder = tfds.builder(spec.name, data_dir=os.fspath(directory))
        version = builder.version
        if builder.is_prepared():
            if _has_array_record(builder):
                return builder
            wrong_format.append(os.fspath(builder.data_dir))
    raise DatasetNotFoundError(
        _not_found_message(spec, version, searched, wrong_format),
        name=spec.name,
        searched=[os.fspath(d) for d, _ in searched],
    )


def find_prepared(name: str, *, data_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """The folder (``DATA_DIR/name/version``) where :func:`load_split` would read ``name``,
    searched by the same ``data_dir`` rule; reads no record.

    Raises:
      DatasetNotFoundError: not prepared in the array_record format (the message says how).
    """
    return pathlib.Path(os.fspath(_find_builder(_spec(name), data_dir).data_dir))


# --------------------------------------------------------------------------------------------
# Decoding and caching
# --------------------------------------------------------------------------------------------


def default_cache_dir() -> pathlib.Path:
    """``$LIPXAI_CACHE_DIR``, else ``$XDG_CACHE_HOME/lipxai``, else ``~/.cache/lipxai``."""
    env = os.environ.get("LIPXAI_CACHE_DIR")
    if env:
        return pathlib.Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = pathlib.Path(xdg).expanduser() if xdg else pathlib.Path.home() / ".cache"
    return base / "lipxai"


def _split_key(split: str) -> str:
    key = re.sub(r"[^A-Za-z0-9_.-]+", "_", split).strip("_")
    if key != split:  # keep distinct slice specs distinct
        key += "-" + hashlib.sha1(split.encode()).hexdigest()[:8]
    return key


def _source_fingerprint(builder, split: str) -> dict:
    """Names and sizes of the array_record files backing ``split`` (slices: the whole split)."""
    files = {}
    for part in split.split("+"):
        base = part.split("[", 1)[0].strip()
        for path in builder.info.splits[base].filepaths:
            path = pathlib.Path(os.fspath(path))
            files[path.name] = path.stat().st_size if path.exists() else -1
    return dict(sorted(files.items()))


def _writable_dir(path: pathlib.Path) -> bool:
    """Writable, and not marked read-only by its mode bits (which root would otherwise ignore)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    write_bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
    return stat.S_ISDIR(mode) and bool(mode & write_bits) and os.access(path, os.W_OK)


def _cache_path(builder, spec: DatasetSpec, split: str, cache_dir) -> pathlib.Path:
    """The cache file of a split: ``cache_dir/name/version/split.npz``. Never beside the
    prepared files: the data folder is the user's, and often shared or read-only."""
    root = pathlib.Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / spec.name / str(builder.version) / f"{_split_key(split)}.npz"


def _read_cache(path: pathlib.Path, meta: dict):
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            stored = json.loads(str(z["meta"]))
            if stored != meta:
                _log.info("ignoring stale cache %s (%s != %s)", path, stored, meta)
                return None
            images, labels = z["images"], z["labels"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as err:
        _log.warning("ignoring unreadable cache %s: %s", path, err)
        return None
    n = meta["num_examples"]
    if images.shape != (n, *meta["image_shape"]) or labels.shape != (n,):
        _log.warning("ignoring cache %s with wrong shapes %s, %s", path, images.shape, labels.shape)
        return None
    if images.dtype != np.uint8 or labels.dtype != np.int32:
        return None
    return images, labels


def _write_cache(path: pathlib.Path, meta: dict, images, labels) -> bool:
    directory = path.parent
    try:
        if not directory.exists():
            if not _writable_dir(_existing_ancestor(directory)):
                return False
            directory.mkdir(parents=True, exist_ok=True)
        if not _writable_dir(directory):
            return False
        tmp = directory / f".tmp-{os.getpid()}-{uuid.uuid4().hex}.npz"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, images=images, labels=labels, meta=np.array(json.dumps(meta)))
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as err:
        _log.warning("could not write cache %s: %s", path, err)
        return False
    return True


def _existing_ancestor(path: pathlib.Path) -> pathlib.Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _fit(image: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Resize the shorter side to ``round(H / 0.875)`` and center-crop to ``shape``."""
    from PIL import Image

    h, w, _ = shape
    if image.shape == shape:
        return image
    pil = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
    side = round(max(h, w) / 0.875)
    scale = side / min(pil.height, pil.width)
    new_w, new_h = max(w, round(pil.width * scale)), max(h, round(pil.height * scale))
    pil = pil.resize((new_w, new_h), Image.BICUBIC)
    left, top = (new_w - w) // 2, (new_h - h) // 2
    out = np.asarray(pil.crop((left, top, left + w, top + h)), dtype=np.uint8)
    return out.reshape(shape) if out.ndim == 2 else out


def _decode(source, spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray]:
    n = len(source)
    images = np.empty((n, *spec.image_shape), np.uint8)  # preallocated: no list of n arrays
    labels = np.empty((n,), np.int64)
    for start in range(0, n, _DECODE_CHUNK):
        stop = min(n, start + _DECODE_CHUNK)
        records = source.__getitems__(range(start, stop))
        for i, record in enumerate(records, start):
            image = np.asarray(record["image"], np.uint8)
            images[i] = _fit(image, spec.image_shape) if spec.variable_size else image
            labels[i] = record["label"]
    if n and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise ValueError(
            f"dataset {spec.name!r} has labels in [{labels.min()}, {labels.max()}], expected "
            f"[0, {spec.num_classes}); was the split unlabelled?"
        )
    return images, labels.astype(np.int32)


def load_split(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read a whole split into memory.

    Args:
      name: a key of :data:`DATASETS`.
      split: a split name of that dataset (``"train"``, ``"test"``; ``"validation"`` for
        imagenet2012); tfds slices (``"train[:5000]"``) and unions (``"train+test"``) work too.
      data_dir: the tfds data directory. Default: ``$TFDS_DATA_DIR`` if set, else tfds's
        default directories (``~/tensorflow_datasets`` and registered ones).
      cache: read/write the decoded arrays from/to an ``.npz`` cache under ``cache_dir``, keyed by
        name, version and split, and used only when its record count, shapes and source file
        sizes match the prepared data. Nothing is ever written into the data folder.
      cache_dir: the cache folder, default :func:`default_cache_dir` (``~/.cache/lipxai``).

    Returns:
      ``(images, labels)``: ``uint8 [N, H, W, C]`` with ``(H, W, C) = DATASETS[name].image_shape``
      and ``int32 [N]`` in ``[0, num_classes)``. Variable-size datasets (imagenet2012) are
      resized and center-cropped (see :class:`DatasetSpec`); a whole imagenet2012 train split
      needs about 190 GB of memory, so read slices of it.

    Raises:
      DatasetNotFoundError: the dataset is not prepared in the array_record format; the message
        says how to prepare it. No random or synthetic data is ever returned.
      ValueError: unknown ``name`` or ``split``.
    """
    spec = _spec(name)
    split = check_split(name, split)
    if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
        raise TypeError(f"cache_dir must be a path or None, got {type(cache_dir).__name__}")
    builder = _find_builder(spec, data_dir)
    source = builder.as_data_source(split=split, file_format="array_record")
    meta = {
        "format": _CACHE_FORMAT,
        "name": spec.name,
        "version": str(builder.version),
        "split": split,
        "num_examples": len(source),
        "image_shape": list(spec.image_shape),
        "source_files": _source_fingerprint(builder, split),
    }
    path = _cache_path(builder, spec, split, cache_dir) if cache else None
    if path is not None:
        t0 = time.perf_counter()
        hit = _read_cache(path, meta)
        if hit is not None:
            _log.info(
                "read %s/%s from cache %s in %.2fs", name, split, path, time.perf_counter() - t0
            )
            return hit
    t0 = time.perf_counter()
    images, labels = _decode(source, spec)
    _log.info(
        "decoded %d records of %s/%s in %.2fs", len(labels), name, split, time.perf_counter() - t0
    )
    if path is not None and _write_cache(path, meta, images, labels):
        _log.info("cached %s/%s at %s", name, split, path)
    return images, labels


# --------------------------------------------------------------------------------------------
# Preparing (needs TensorFlow with tfds 4.9.x)
# --------------------------------------------------------------------------------------------


def _require_prepare_dependencies() -> None:
    missing = []
    for module in ("tensorflow", "importlib_resources"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ImportError(
            f"preparing a dataset with tensorflow-datasets needs {' and '.join(missing)}, which "
            "is not installed (reading prepared data does not): "
            'pip install "lipxai[prepare]" (or pip install tensorflow-cpu importlib_resources)'
        )


def prepare(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    manual_dir: str | os.PathLike | None = None,
) -> pathlib.Path:
    """Download and prepare a dataset in the array_record format; return its folder.

    Args:
      name: a key of :data:`DATASETS`.
      data_dir: where to prepare it. Default: ``$TFDS_DATA_DIR`` if set, else tfds's default
        (``~/tensorflow_datasets``). Downloads go to ``data_dir/downloads``.
      manual_dir: a folder holding the source files (required for imagenet2012; for others it
        lets tfds use already downloaded files instead of the network).

    Raises:
      ImportError: TensorFlow (needed by tfds 4.9.x to prepare) is missing:
        ``pip install "lipxai[prepare]"``.
      ValueError: unknown ``name``, or a manual-download dataset without ``manual_dir``.
      FileNotFoundError: ``manual_dir`` does not exist or is empty.
      NotADirectoryError: ``manual_dir`` or ``data_dir`` is a file.
      DownloadError: the download or the preparation failed (e.g. no network); the message
        says how to prepare the dataset from manually downloaded files.
    """
    spec = _spec(name)
    target = _target_data_dir(data_dir)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"data_dir {os.fspath(target)!r} is a file, not a folder")
    if manual_dir is not None:
        if not isinstance(manual_dir, (str, os.PathLike)):
            raise TypeError(f"manual_dir must be a path or None, got {type(manual_dir).__name__}")
        manual_dir = pathlib.Path(manual_dir).expanduser()
        if not manual_dir.exists():
            raise FileNotFoundError(f"manual_dir {os.fspath(manual_dir)!r} does not exist")
        if not manual_dir.is_dir():
            raise NotADirectoryError(f"manual_dir {os.fspath(manual_dir)!r} is a file, not a folder")
        if not any(manual_dir.iterdir()):
            raise FileNotFoundError(f"manual_dir {os.fspath(manual_dir)!r} is empty: put the "
                                    f"source files of {name!r} there")
    elif spec.manual_download:
        raise ValueError(f"manual_dir is required for {name!r}. {spec.manual_instructions}")
    _require_prepare_dependencies()

    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=os.fspath(target), file_format="array_record")
    config = None
    if manual_dir is not None:
        config = tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir))
    t0 = time.perf_counter()
    try:
        builder.download_and_prepare(
            download_dir=os.fspath(target / "downloads"), download_config=config
        )
    except (OSError, tfds.download.DownloadError) as err:
        # tfds's record of what it downloads: "url<TAB>size<TAB>sha256<TAB>file name" per line
        sources = pathlib.Path(tfds.__file__).parent / "url_checksums" / f"{name}.txt"
        lines = sources.read_text().splitlines() if sources.is_file() else []
        rows = [line.split("\t") for line in lines if line.strip()]
        files = ", ".join(r[-1] for r in rows) or f"the source files of {name!r}"
        origin = f" (from {rows[0][0].rpartition('/')[0]}/)" if rows else ""
        reason = " ".join(f"{type(err).__name__}: {err}".split())
        raise DownloadError(
            f"downloading or preparing {name!r} failed ({reason}). To prepare it by hand, put "
            f"{files}{origin} in a folder DIR and run `lipxai prepare-data {name} --manual-dir DIR "
            f"--data-dir {os.fspath(target)}`; lipxai then reads it with "
            f"TFDS_DATA_DIR={os.fspath(target)}"
        ) from err
    _log.info("prepared %s in %s in %.1fs", name, builder.data_dir, time.perf_counter() - t0)
    if not _has_array_record(builder):
        raise RuntimeError(
            f"{name!r} is already prepared in {builder.data_dir} in the "
            f"{builder.info.file_format.value} format, not array_record; delete that folder "
            "and prepare again"
        )
    return pathlib.Path(os.fspath(builder.data_dir))


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------


def preprocess(images, *, normalize=None) -> np.ndarray:
    """Images to ``float32 [N, H, W, C]``.

    ``uint8`` images are scaled to ``[0, 1]`` (``x / 255``); floating images must already lie in
    ``[0, 1]``. With ``normalize=(mean, std)`` (scalars or one value per channel, ``std > 0``)
    the result is ``(x - mean) / std``; the caller records the choice in its run config.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must have rank 4 (NHWC), got shape {images.shape}")
    if images.dtype == np.uint8:
        x = images.astype(np.float32)
        x *= np.float32(1 / 255)
    elif np.issubdtype(images.dtype, np.floating):
        x = images.astype(np.float32)
        if x.size and (not np.isfinite(x).all() or x.min() < 0 or x.max() > 1):
            raise ValueError(
                "images must be uint8 or floating in [0, 1], got floating values in "
                f"[{np.nanmin(x)}, {np.nanmax(x)}]"
            )
    else:
        raise TypeError(f"images must be uint8 or floating, got dtype {images.dtype}")
    if normalize is None:
        return x
    mean, std = _normalization(normalize, images.shape[-1])
    x -= mean
    x /= std
    return x


def _normalization(normalize, channels: int) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(normalize, (tuple, list)) or len(normalize) != 2:
        raise ValueError(f"normalize must be None or a pair (mean, std), got {normalize!r}")
    out = []
    for label, value in zip(("mean", "std"), normalize, strict=False):
        arr = np.asarray(value, np.float32)
        if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] not in (1, channels)):
            raise ValueError(
                f"normalize {label} must be a scalar or have {channels} values (one per channel), "
                f"got shape {arr.shape}"
            )
        if not np.isfinite(arr).all():
            raise ValueError(f"normalize {label} must be finite, got {value!r}")
        out.append(arr.reshape(-1))
    if (out[1] <= 0).any():
        raise ValueError(f"normalize std must be > 0, got {normalize[1]!r}")
    return out[0], out[1]


# --------------------------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------------------------


def process_shard() -> tuple[int, int]:
    """``(jax.process_index(), jax.process_count())``: one shard per host."""
    import jax

    return jax.process_index(), jax.process_count()


def steps_per_epoch(
    n: int, batch_size: int, num_shards: int = 1, drop_remainder: bool = True
) -> int:
    """Global steps per epoch for ``n`` examples, per-shard ``batch_size`` and ``num_shards``."""
    n = _checks.positive_int("n", n)
    batch_size = _checks.positive_int("batch_size", batch_size)
    num_shards = _checks.positive_int("num_shards", num_shards)
    global_batch = batch_size * num_shards
    if drop_remainder:
        if global_batch > n:
            raise ValueError(
                f"batch_size * num_shards = {batch_size} * {num_shards} = {global_batch} is larger "
                f"than the number of examples ({n}) with drop_remainder=True: no batch would be "
                "produced"
            )
        return n // global_batch
    return -(-n // global_batch)


def _non_negative_int(name: str, value) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


@dataclasses.dataclass(frozen=True)
class _Plan:
    n: int
    batch_size: int
    num_shards: int
    shard_index: int
    seed: int
    shuffle: bool
    drop_remainder: bool
    steps: int  # per epoch


def _plan(images, labels, batch_size, seed, shuffle, drop_remainder, shard_index, num_shards):
    images_shape = np.shape(images)
    if len(images_shape) != 4:
        raise ValueError(f"images must have rank 4 (NHWC), got shape {tuple(images_shape)}")
    labels_dtype = getattr(labels, "dtype", None)
    if labels_dtype is None or not np.issubdtype(labels_dtype, np.integer):
        raise TypeError(f"labels must be an integer array, got dtype {labels_dtype}")
    n = images_shape[0]
    if np.shape(labels) != (n,):
        raise ValueError(f"labels must have shape ({n},) to match images, got {np.shape(labels)}")
    if n == 0:
        raise ValueError("images must hold at least one example, got 0")
    batch_size = _checks.positive_int("batch_size", batch_size)
    num_shards = _checks.positive_int("num_shards", num_shards)
    shard_index = _non_negative_int("shard_index", shard_index)
    if shard_index >= num_shards:
        raise ValueError(f"shard_index must be in [0, num_shards={num_shards}), got {shard_index}")
    seed = _non_negative_int("seed", seed)
    if not isinstance(shuffle, bool):
        raise TypeError(f"shuffle must be a bool, got {shuffle!r}")
    if not isinstance(drop_remainder, bool):
        raise TypeError(f"drop_remainder must be a bool, got {drop_remainder!r}")
    steps = steps_per_epoch(n, batch_size, num_shards, drop_remainder)
    return _Plan(n, batch_size, num_shards, shard_index, seed, shuffle, drop_remainder, steps)


def _permutation(plan: _Plan, epoch: int) -> np.ndarray:
    if not plan.shuffle:
        return np.arange(plan.n)
    return np.random.default_rng((plan.seed, epoch)).permutation(plan.n)


def _shard_indices(plan: _Plan, perm: np.ndarray, position: int) -> np.ndarray:
    """Indices of this shard's part of the global batch at ``position`` within an epoch."""
    global_batch = plan.batch_size * plan.num_shards
    start = position * global_batch
    size = min(global_batch, plan.n - start)
    if size == global_batch:
        lo = plan.shard_index * plan.batch_size
        hi = lo + plan.batch_size
    else:  # partial last batch (drop_remainder=False): near-equal contiguous parts
        base, extra = divmod(size, plan.num_shards)
        lo = plan.shard_index * base + min(plan.shard_index, extra)
        hi = lo + base + (plan.shard_index < extra)
    return perm[start + lo : start + hi]


def _gather(images, labels, idx, normalize):
    return preprocess(np.asarray(images)[idx], normalize=normalize), np.asarray(labels, np.int64)[
        idx
    ].astype(np.int32)


def batch_for_step(
    images,
    labels,
    batch_size: int,
    step: int,
    *,
    seed: int,
    shuffle: bool = True,
    drop_remainder: bool = True,
    shard_index: int = 0,
    num_shards: int = 1,
    normalize=None,
) -> tuple[np.ndarray, np.ndarray]:
    """The batch of global ``step`` (counted from 0 over all epochs) for this shard.

    Equal to the ``step``-th batch yielded by ``batches(..., num_epochs=None)`` with the same
    arguments: epoch ``step // steps_per_epoch``, position ``step % steps_per_epoch`` in that
    epoch's permutation. Returns ``(x float32 [b, H, W, C], y int32 [b])`` (``b = batch_size``
    except possibly at the end of an epoch when ``drop_remainder=False``).
    """
    plan = _plan(images, labels, batch_size, seed, shuffle, drop_remainder, shard_index, num_shards)
    step = _non_negative_int("step", step)
    epoch, position = divmod(step, plan.steps)
    idx = _shard_indices(plan, _permutation(plan, epoch), position)
    return _gather(images, labels, idx, normalize)


def batches(
    images,
    labels,
    batch_size: int,
    *,
    seed: int,
    epoch: int = 0,
    num_epochs: int | None = 1,
    start_step: int | None = None,
    shuffle: bool = True,
    drop_remainder: bool = True,
    shard_index: int = 0,
    num_shards: int = 1,
    normalize=None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Deterministic batches ``(x float32 [b, H, W, C], y int32 [b])`` of this shard.

    Yields the global steps ``[first, (epoch + num_epochs) * steps_per_epoch)`` in order, where
    ``first = start_step`` when given (a global step, counted from 0 over all epochs, in
    ``[epoch * spe, (epoch + num_epochs) * spe]``), else ``epoch * spe``; ``num_epochs=None``
    iterates forever. Each batch equals ``batch_for_step(..., step)``. See the module docstring for
    the sharding convention (``batch_size`` is per shard; global batch
    ``batch_size * num_shards``).

    Typical uses: one epoch at a time ``batches(x, y, b, seed=s, epoch=e)``; a whole run resumed
    at global step ``k``: ``batches(x, y, b, seed=s, num_epochs=E, start_step=k)``.
    Arguments are validated when called, before the first batch is requested.
    """
    plan = _plan(images, labels, batch_size, seed, shuffle, drop_remainder, shard_index, num_shards)
    epoch = _non_negative_int("epoch", epoch)
    if num_epochs is not None:
        num_epochs = _non_negative_int("num_epochs", num_epochs)
    first = epoch * plan.steps
    stop = None if num_epochs is None else (epoch + num_epochs) * plan.steps
    if start_step is not None:
        start_step = _non_negative_int("start_step", start_step)
        if start_step < first or (stop is not None and start_step > stop):
            raise ValueError(
                f"start_step must be a global step in [{first}, {stop if stop is not None else 'inf'}]"
                f" (epoch={epoch}, num_epochs={num_epochs}, steps_per_epoch={plan.steps}), "
                f"got {start_step}"
            )
        first = start_step
    if normalize is not None:
        _normalization(normalize, np.shape(images)[-1])  # fail now, not at the first batch
    # host arrays once (a jax array would otherwise be copied to the host at every batch)
    return _iterate(plan, np.asarray(images), np.asarray(labels), first, stop, normalize)


def _iterate(plan, images, labels, first, stop, normalize):
    step = first
    perm_epoch, perm = -1, None
    while stop is None or step < stop:
        epoch, position = divmod(step, plan.steps)
        if epoch != perm_epoch:
            perm_epoch, perm = epoch, _permutation(plan, epoch)
        yield _gather(images, labels, _shard_indices(plan, perm, position), normalize)
        step += 1
