"""Suite-wide settings: tests are offline, write only in temporary folders, and skip (CI: fail)
where the data they read is not prepared (``tests/_datasets.py``)."""

import os
import shutil
import socket
import tempfile

import jax
import pytest

import _datasets

# Every file a test writes outside its tmp_path (the decoded-dataset cache, matplotlib's font
# cache) goes to this process's scratch folder, removed at the end.
_SCRATCH = tempfile.mkdtemp(prefix="lipxai-tests-")
os.environ["LIPXAI_CACHE_DIR"] = os.path.join(_SCRATCH, "cache")
os.environ["MPLCONFIGDIR"] = os.path.join(_SCRATCH, "matplotlib")
# No test downloads: HTTP(S) in this process and in the subprocesses it starts goes through a
# closed local port, and sockets of this process reach the loopback interface only.
for _var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
    os.environ[_var] = "http://127.0.0.1:9"
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "localhost,127.0.0.1"

jax.config.update("jax_default_matmul_precision", "highest")

_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex


def _loopback_only(connect):
    def guarded(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in _LOOPBACK:
            raise OSError(f"the tests are offline: a connection to {address[0]} was refused")
        return connect(self, address)

    return guarded


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "dataset(*names): reads these prepared tfds datasets (skips where they are "
                   "missing, fails under LIPXAI_REQUIRE_DATA=1)")
    socket.socket.connect = _loopback_only(_connect)
    socket.socket.connect_ex = _loopback_only(_connect_ex)


def pytest_unconfigure(config):
    socket.socket.connect, socket.socket.connect_ex = _connect, _connect_ex
    shutil.rmtree(_SCRATCH, ignore_errors=True)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    for marker in item.iter_markers("dataset"):
        _datasets.require(*marker.args)
