"""The test suite itself on a user's machine: data tests skip without data (fail under CI's
LIPXAI_REQUIRE_DATA), and no test reaches the network."""

import os
import socket
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_TESTS = ["tests/test_data.py::test_mnist_test_split", "tests/test_boundary_mnist.py"]


def _pytest_without_data(home, *extra_env):
    """Run data tests in a fresh pytest where no dataset can be found: no TFDS_DATA_DIR and a
    HOME whose tfds default folder (~/tensorflow_datasets) is empty."""
    hidden = ("TFDS_DATA_DIR", "LIPXAI_REQUIRE_DATA", "LIPXAI_RAW_MNIST_DIR")
    env = {k: v for k, v in os.environ.items() if k not in hidden}
    env.update({"HOME": str(home), **dict(extra_env)})
    cmd = [sys.executable, "-m", "pytest", "-o", "addopts=", "-p", "no:cacheprovider", "-q", "-rs",
           *DATA_TESTS]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_data_tests_skip_with_how_to_prepare_where_there_is_no_data(tmp_path):
    out = _pytest_without_data(tmp_path)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "passed" not in out.stdout and "failed" not in out.stdout
    skips = [line for line in out.stdout.splitlines() if line.startswith("SKIPPED")]
    assert skips and all("run `lipxai prepare-data mnist`" in line for line in skips), out.stdout
    assert not (tmp_path / "tensorflow_datasets").exists()  # nothing downloaded


def test_data_tests_fail_where_ci_requires_the_data(tmp_path):
    out = _pytest_without_data(tmp_path, ("LIPXAI_REQUIRE_DATA", "1"))
    assert out.returncode == 1, out.stdout[-3000:]
    assert "LIPXAI_REQUIRE_DATA is set but mnist is not prepared" in out.stdout


def test_no_test_reaches_the_network():
    with pytest.raises(OSError, match="the tests are offline"):
        socket.create_connection(("192.0.2.1", 443), timeout=1)  # TEST-NET-1: never routed
    assert os.environ["HTTPS_PROXY"] == "http://127.0.0.1:9"  # subprocesses too
