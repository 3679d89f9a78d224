"""The ``.npz`` cache of decoded splits.

Decoding a split record by record is slow; reading back its decoded arrays from one ``.npz``
file is fast. A cache file stores ``images``, ``labels`` and a JSON ``meta`` record (dataset,
version, split, record count, image shape, names and sizes of the source files) and is used only
when that record equals the one of the prepared data, so a re-prepared or changed dataset is
decoded again. Cache files live under :func:`default_cache_dir`, never beside the prepared
files: the data folder is the user's, and often shared or read-only. A cache that cannot be
read or written is skipped with a log line, never an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import re
import stat
import uuid
import zipfile

import numpy as np

__all__ = ["cache_path", "default_cache_dir", "read_cache", "write_cache"]

_log = logging.getLogger(__name__)

_FORMAT = 1  # the layout of a cache file; bump it to ignore every older cache


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


def cache_path(name: str, version: str, split: str, cache_dir) -> pathlib.Path:
    """The cache file of a split: ``cache_dir/name/version/split.npz`` (``cache_dir`` None:
    :func:`default_cache_dir`); a sliced split gets a file name of its own."""
    root = pathlib.Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / name / str(version) / f"{_split_key(split)}.npz"


def read_cache(path: pathlib.Path, meta: dict):
    """``(images uint8, labels int32)`` from ``path`` if it exists, is readable and was written
    with this ``meta`` (``num_examples`` and ``image_shape`` give the expected shapes); else
    None."""
    if not path.is_file():
        return None
    meta = {"format": _FORMAT, **meta}
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


def write_cache(path: pathlib.Path, meta: dict, images, labels) -> bool:
    """Write a cache file atomically (a temporary file, then a rename); whether it was written.
    Creates missing folders, but writes nothing under a folder that is read-only."""
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
                record = json.dumps({"format": _FORMAT, **meta})
                np.savez(f, images=images, labels=labels, meta=np.array(record))
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as err:
        _log.warning("could not write cache %s: %s", path, err)
        return False
    return True


def _writable_dir(path: pathlib.Path) -> bool:
    """Writable, and not marked read-only by its mode bits (which root would otherwise ignore)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    write_bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
    return stat.S_ISDIR(mode) and bool(mode & write_bits) and os.access(path, os.W_OK)


def _existing_ancestor(path: pathlib.Path) -> pathlib.Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
