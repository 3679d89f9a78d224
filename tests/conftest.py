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

# XLA programs that take over half a second to compile go to a persistent compilation cache that
# lives as long as this pytest run: an xdist worker, a subprocess or a notebook kernel that needs a
# program another one already compiled loads it instead.  The process that starts the run (the
# xdist controller, or the only process under -n 0) makes a fresh folder in its scratch folder; the
# workers and the processes the tests start inherit its path through the environment.  Nothing is
# kept from one run to the next.
if "PYTEST_XDIST_WORKER" not in os.environ:
    os.environ["LIPXAI_TESTS_JAX_CACHE"] = os.path.join(_SCRATCH, "jax-cache")
_JAX_CACHE = {"jax_compilation_cache_dir": os.environ["LIPXAI_TESTS_JAX_CACHE"],
              "jax_persistent_cache_min_compile_time_secs": 0.5,
              "jax_persistent_cache_min_entry_size_bytes": 0}
for _name, _value in _JAX_CACHE.items():
    os.environ[_name.upper()] = str(_value)
    jax.config.update(_name, _value)

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
