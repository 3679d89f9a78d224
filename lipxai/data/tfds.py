"""Datasets prepared by tensorflow-datasets: locate, read (with a cache) and prepare them.

Reading
    :func:`load_split` reads a whole split of a dataset prepared by tensorflow-datasets in the
    ``array_record`` format with :func:`tensorflow_datasets.data_source` (no TensorFlow needed;
    pillow decodes the images) and returns ``(images uint8 [N, H, W, C], labels int32 [N])``.
    Decoding is record by record, so the decoded arrays are cached as an ``.npz`` file
    (:mod:`lipxai.data.cache`) and verified against the record count and the sizes of the source
    files before use.

    A dataset that is not prepared raises :class:`DatasetNotFoundError` (a
    ``FileNotFoundError``) that says how to get it. This module never substitutes random or
    synthetic data.

Preparing
    :func:`prepare` downloads and prepares a dataset with tfds (``file_format="array_record"``),
    or prepares it from source files downloaded by hand (``manual_dir``, e.g. the four original
    MNIST files). With tensorflow-datasets 4.9.x this step imports TensorFlow, which is therefore
    only in the optional extra ``pip install "lipxai[prepare]"``; reading prepared data never
    needs it.
"""

from __future__ import annotations

import logging
import os
import pathlib
import time
from collections.abc import Sequence

import numpy as np

from lipxai.data.cache import cache_path, read_cache, write_cache
from lipxai.data.catalogue import DatasetSpec, check_split, dataset_spec

__all__ = ["DatasetNotFoundError", "DownloadError", "find_prepared", "load_split", "prepare"]

_log = logging.getLogger(__name__)

_DECODE_CHUNK = 2048


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
    return pathlib.Path(os.fspath(_find_builder(dataset_spec(name), data_dir).data_dir))


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _source_fingerprint(builder, split: str) -> dict:
    """Names and sizes of the array_record files backing ``split`` (slices: the whole split)."""
    files = {}
    for part in split.split("+"):
        base = part.split("[", 1)[0].strip()
        for path in builder.info.splits[base].filepaths:
            path = pathlib.Path(os.fspath(path))
            files[path.name] = path.stat().st_size if path.exists() else -1
    return dict(sorted(files.items()))


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
      name: a key of :data:`lipxai.data.DATASETS`.
      split: a split name of that dataset (``"train"``, ``"test"``; ``"validation"`` for
        imagenet2012); tfds slices (``"train[:5000]"``) and unions (``"train+test"``) work too.
      data_dir: the tfds data directory. Default: ``$TFDS_DATA_DIR`` if set, else tfds's
        default directories (``~/tensorflow_datasets`` and registered ones).
      cache: read/write the decoded arrays from/to an ``.npz`` cache under ``cache_dir``, keyed by
        name, version and split, and used only when its record count, shapes and source file
        sizes match the prepared data. Nothing is ever written into the data folder.
      cache_dir: the cache folder, default :func:`lipxai.data.default_cache_dir`
        (``~/.cache/lipxai``).

    Returns:
      ``(images, labels)``: ``uint8 [N, H, W, C]`` with ``(H, W, C) = DATASETS[name].image_shape``
      and ``int32 [N]`` in ``[0, num_classes)``. Variable-size datasets (imagenet2012) are
      resized and center-cropped (see :class:`lipxai.data.DatasetSpec`); a whole imagenet2012
      train split needs about 190 GB of memory, so read slices of it.

    Raises:
      DatasetNotFoundError: the dataset is not prepared in the array_record format; the message
        says how to prepare it. No random or synthetic data is ever returned.
      ValueError: unknown ``name`` or ``split``.
    """
    spec = dataset_spec(name)
    split = check_split(name, split)
    if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
        raise TypeError(f"cache_dir must be a path or None, got {type(cache_dir).__name__}")
    builder = _find_builder(spec, data_dir)
    source = builder.as_data_source(split=split, file_format="array_record")
    meta = {
        "name": spec.name,
        "version": str(builder.version),
        "split": split,
        "num_examples": len(source),
        "image_shape": list(spec.image_shape),
        "source_files": _source_fingerprint(builder, split),
    }
    path = cache_path(spec.name, str(builder.version), split, cache_dir) if cache else None
    if path is not None:
        t0 = time.perf_counter()
        hit = read_cache(path, meta)
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
    if path is not None and write_cache(path, meta, images, labels):
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
      name: a key of :data:`lipxai.data.DATASETS`.
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
    spec = dataset_spec(name)
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
