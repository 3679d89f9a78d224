"""Tests that read prepared data: they run where the data is found and skip, saying how to
prepare it, where it is not.

A tfds dataset is found as :func:`lipxai.data.load_split` finds it (``TFDS_DATA_DIR``, else
tfds's default folders); the original MNIST files through ``LIPXAI_RAW_MNIST_DIR``.  CI sets
``LIPXAI_REQUIRE_DATA=1`` (``.ci/run``): there a missing dataset fails the test instead, so
that CI never passes by skipping.  Use ``@pytest.mark.dataset("mnist")`` on a test or module
(``tests/conftest.py``), or call :func:`require` / :func:`prepared` in a fixture.
"""

from __future__ import annotations

import functools
import os
import pathlib

import pytest

from lipxai import data

REQUIRE_DATA = "LIPXAI_REQUIRE_DATA"
RAW_MNIST = "LIPXAI_RAW_MNIST_DIR"
#: The four original MNIST files (IDX, gzip) that tfds's mnist builder reads from a manual dir.
RAW_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                   "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _missing(reason: str):
    if os.environ.get(REQUIRE_DATA):
        pytest.fail(f"{REQUIRE_DATA} is set but {reason}", pytrace=False)
    pytest.skip(reason)


@functools.cache
def _find(name: str, tfds_data_dir: str | None) -> pathlib.Path | None:
    del tfds_data_dir  # part of the cache key: data.find_prepared reads the variable itself
    try:
        return data.find_prepared(name)
    except data.DatasetNotFoundError:
        return None


def prepared(name: str) -> pathlib.Path:
    """The folder ``DATA_DIR/name/version`` of a prepared dataset, or skip (fail under CI)."""
    found = _find(name, os.environ.get("TFDS_DATA_DIR"))
    if found is None:
        _missing(f"{name} is not prepared: run `lipxai prepare-data {name}`, or set TFDS_DATA_DIR "
                 "to a folder that holds it")
    return found


def require(*names: str) -> None:
    """Skip (fail under CI) unless every named dataset is prepared."""
    for name in names:
        prepared(name)


def raw_mnist() -> pathlib.Path:
    """The folder of the four original MNIST files (``LIPXAI_RAW_MNIST_DIR``), or skip."""
    folder = os.environ.get(RAW_MNIST)
    if not folder or not all((pathlib.Path(folder) / f).is_file() for f in RAW_MNIST_FILES):
        _missing(f"the original MNIST files are not found: set {RAW_MNIST} to a folder holding "
                 + ", ".join(RAW_MNIST_FILES))
    return pathlib.Path(folder)
