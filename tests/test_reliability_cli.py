"""Issue 18, reliability of the command line: a user's mistake is one line on stderr and exit
status 2, told before any heavy work and with nothing written; a partial run never replaces
the full results of a run directory; the apps reject an image without its batch axis.

Most checks call :func:`lipxai.cli.main` in-process on a folder that looks like a run but
cannot be loaded (loading it fails the test), so they take the time of argument parsing. One
tiny trained run per module, with stand-ins for a quickstart's standard result files, serves
the checks that load a run or write files. (A rejected quickstart followed by a valid one in
the same folder: tests/test_cli.py's end-to-end test.)
"""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import types
from importlib import metadata

import _datasets
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _tiny_run import TINY

import lipxai.train.rundir
from lipxai import cli, data
from lipxai.apps import certify as certify_app
from lipxai.apps import evaluate as evaluate_app
from lipxai.apps import explain as explain_app
from lipxai.apps.names import result_stem
from lipxai.data import tfds as data_tfds
from lipxai.train import config as config_lib
from lipxai.train import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "mnist_lip.py")
STANDARD = ("certify.json", "evaluate.json", "evaluate.md", "explanations.png", "report.md")


def _files(folder) -> dict:
    """``{relative path: bytes}`` of every file under ``folder`` (what "nothing written" compares)."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def _main(argv) -> tuple[int, str, str]:
    """``cli.main(argv)`` with its stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def _one_line_error(argv, *needles) -> str:
    rc, _, err = _main(argv)
    lines = err.splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _lipxai(*args):
    return subprocess.run([sys.executable, "-m", "lipxai", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture
def fake_run(tmp_path, monkeypatch):
    """A folder with a run's config.json and an empty checkpoints/ that the argument checks
    accept; loading it or reading data fails the test (the checks come before that work)."""
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    config_lib.save_json(config_lib.load_config(CONFIG), str(folder / "config.json"))

    def heavy(*args, **kwargs):
        raise AssertionError("the arguments should have been rejected before this work")

    monkeypatch.setattr(lipxai.train.rundir, "load_run", heavy)
    monkeypatch.setattr(data, "load_split", heavy)
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A trained run (the tiny model, 2 steps) holding stand-ins for the standard result files
    of a full quickstart: these tests check which files a command writes, not their values."""
    _datasets.require("mnist")
    folder = tmp_path_factory.mktemp("reliability") / "run"
    config = config_lib.apply_overrides(config_lib.load_config(CONFIG), [
        *TINY, "--config.train.num_steps=2", "--config.train.eval_every=2"])
    train(config, str(folder), verbose=False)
    full = {"n": 10000, "split": "test", "clean_accuracy": 0.9, "lipschitz_upper": 1.0,
            "lipschitz_lower": 0.5, "certified_accuracy": {"0.5": 0.8, "1.0": 0.6, "1.58": 0.4}}
    (folder / "certify.json").write_text(json.dumps(full))
    for name in STANDARD[1:]:
        (folder / name).write_bytes(b"the full results")
    return folder


# -- 1 and 7: bad values, one line, before any work ------------------------------------------------

BAD_ARGUMENTS = [
    (["certify", "{run}", "--n", "0"], ["argument --n", "got 0"]),
    (["certify", "{run}", "--n", "-5"], ["argument --n", "got -5"]),
    (["certify", "{run}", "--split", "nosuch"], ["--split", "'nosuch'", "train, test"]),
    (["certify", "{run}", "--eps", "nan"], ["--eps", "finite", "'nan'"]),
    (["certify", "{run}", "--eps", "inf"], ["--eps", "'inf'"]),
    (["certify", "{run}", "--eps", "-1"], ["--eps", ">= 0", "'-1'"]),
    (["certify", "{run}", "--eps", ""], ["--eps must be comma-separated numbers", "''"]),
    (["certify", "{run}", "--eps", "0.1,"], ["--eps must be comma-separated numbers", "'0.1,'"]),
    (["certify", "{run}", "--k", "5"], ["--k and --bounds apply only with --explanation"]),
    (["certify", "{run}", "--bounds", "symbolic"], ["--k and --bounds apply only with --explanation"]),
    (["certify", "{run}", "--explanation", "--k", "0"], ["argument --k", "got 0"]),
    (["certify", "{run}", "--config.optim.lr=1"], ["--config.* overrides only apply to train"]),
    (["explain", "{run}", "--n", "0"], ["argument --n", "got 0"]),
    (["explain", "{run}", "--out", "{run}/missing/dir/x.png"], ["--out", "missing/dir does not exist"]),
    (["explain", "{run}", "--out", "{run}"], ["--out", "is a folder"]),
    (["explain", "{run}", "--out", "{run}/x.foo"], ["--out", "extension", ".png", "'foo'"]),
    (["explain", "{run}", "--method", ""], ["--method takes a comma-separated list", "''"]),
    (["explain", "{run}", "--method", "ig,"], ["--method takes a comma-separated list", "'ig,'"]),
    (["explain", "{run}", "--method", "ig,shap"], ["--method takes a comma-separated list"]),
    (["explain", "{run}", "--method", "ig,ig"], ["--method lists ig more than once"]),
    (["explain", "{run}", "--seed", str(2**64)], ["argument --seed", str(2**64)]),
    (["explain", "{run}", "--split", "validation"], ["--split", "'validation'"]),
    (["evaluate", "{run}", "--n", "0"], ["argument --n", "got 0"]),
    (["evaluate", "{run}", "--batch", "0"], ["argument --batch", "got 0"]),
    (["evaluate", "{run}", "--samples", "0"], ["argument --samples", "got 0"]),
    (["evaluate", "{run}", "--k", "0"], ["unrecognized arguments: --k 0"]),
    (["evaluate", "{run}", "--n", "x"], ["argument --n", "'x'"]),
    (["evaluate", "{run}", "--methods", ""], ["--methods takes a comma-separated list"]),
    (["evaluate", "{run}", "--methods", "counterfactual"], ["--methods takes a comma-separated list"]),
    (["evaluate", "{run}", "--metrics", "auc"], ["--metrics takes a comma-separated list"]),
    (["evaluate", "{run}", "--search", "bfs"], ["argument --search", "'bfs'"]),
    (["certify", "{run}/config.json"], ["is a file, not a run directory"]),
    (["explain", "{run}/config.json"], ["is a file, not a run directory"]),
    (["evaluate", "{run}/config.json"], ["is a file, not a run directory"]),
    (["train", "--config", CONFIG, "--workdir", "{run}/config.json"], ["--workdir", "is a file"]),
    (["quickstart", "--workdir", "{run}/config.json"], ["--workdir", "is a file"]),
]


@pytest.mark.parametrize("argv,needles", BAD_ARGUMENTS,
                         ids=[" ".join(a[:1] + a[2:])[:60] for a, _ in BAD_ARGUMENTS])
def test_bad_arguments_are_one_line_before_any_work(fake_run, argv, needles):
    before = _files(fake_run)
    _one_line_error([a.replace("{run}", str(fake_run)) for a in argv], *needles)
    assert _files(fake_run) == before


@pytest.mark.dataset("mnist")
def test_values_checked_against_the_data_are_one_line(run_dir):
    """What only the loaded split can tell: its size, tfds's slice syntax (a two-line message)."""
    folder = run_dir
    before = _files(folder)
    _one_line_error(["explain", folder, "--n", 10001], "n must be in [1, 10000]", "got 10001")
    _one_line_error(["certify", folder, "--split", "test[abc]"], "split 'test[abc]'")
    assert _files(folder) == before


def test_a_run_without_checkpoints_is_one_line_and_left_as_it_was(fake_run):
    (fake_run / "checkpoints").rmdir()
    _one_line_error(["certify", fake_run], "has no checkpoint yet", "lipxai train")
    assert os.listdir(fake_run) == ["config.json"]


def test_subprocess_errors_are_one_line_without_traceback(fake_run):
    """The installed command, not only main(): the parsers' errors and a bad --out."""
    for args, needle in [(["certify", fake_run, "--n", "0"], "argument --n: must be an integer >= 1"),
                         (["explain", fake_run, "--out", fake_run / "no" / "x.png"], "does not exist")]:
        out = _lipxai(*args)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
        assert len(out.stderr.splitlines()) == 1 and needle in out.stderr


# -- 2: an image without its batch axis ----------------------------------------------------------

def test_apps_reject_an_image_without_its_batch_axis():
    fn = jax.tree_util.Partial(lambda z: z.reshape(z.shape[0], -1)[:, :3])  # any batched model
    image = jnp.full((8, 8, 1), 0.5)
    with pytest.raises(ValueError, match=r"x must be a batch \[B, H, W, C\] .*got shape \(8, 8, 1\)"):
        evaluate_app.score_attributions(fn, image, ("saliency",), ("sparseness",), key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"x must be a batch \[B, H, W, C\]"):
        explain_app.attribute(fn, image, jnp.zeros((8,), jnp.int32), "saliency", key=jax.random.PRNGKey(0))
    for name in ("samples", "batch"):
        with pytest.raises(ValueError, match=f"{name} must be an integer >= 1, got 0"):
            evaluate_app.score_attributions(fn, image[None], ("saliency",), ("sparseness",),
                                  key=jax.random.PRNGKey(0), **{name: 0})
    run = types.SimpleNamespace(config=config_lib.load_config(CONFIG))
    for images in (np.zeros((28, 28, 1), np.uint8), np.zeros((2, 32, 32, 3), np.uint8)):
        with pytest.raises(ValueError, match=r"images must be a batch \[B, 28, 28, 1\] of mnist images") as e:
            certify_app.certify_explanations(run, (0.01,), images=images)
        assert str(e.value).endswith(f"got shape {images.shape}")
    with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
        certify_app.certify_explanations(run, (0.01,), images=np.zeros((2, 28, 28, 1), np.uint8), n=0)


@pytest.mark.dataset("mnist")
@pytest.mark.parametrize("n,message", [(0, "n must be an integer >= 1, got 0"),
                                        (-5, "n must be an integer >= 1, got -5"),
                                        (10001, r"n must be in \[1, 10000\] .*'test'.*got 10001")])
def test_certify_run_rejects_counts_outside_the_split(n, message):
    run = lipxai.train.rundir.Run(workdir="", config=config_lib.load_config(CONFIG), model=None,
                                  variables=None, step=0)
    with pytest.raises(ValueError, match=message):
        certify_app.certify_run(run, n=n)


# -- 3 and 4: preparing data, --version -----------------------------------------------------------

class _OfflineBuilder:
    """A tfds builder whose download fails as a machine without network makes it fail."""

    version = "3.0.1"

    def __init__(self, error):
        self.error = error

    def is_prepared(self):
        return False

    def download_and_prepare(self, **kwargs):
        raise self.error


def _offline(monkeypatch, error):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(data_tfds, "_require_prepare_dependencies", lambda: None)
    monkeypatch.setattr(tfds, "builder", lambda *args, **kwargs: _OfflineBuilder(error))


def _connection_error():
    import requests

    return requests.exceptions.ConnectionError(
        "HTTPSConnectionPool(host='storage.googleapis.com', port=443): Max retries exceeded\n"
        "(Caused by NameResolutionError: Failed to resolve 'storage.googleapis.com')")


def test_a_failed_download_is_one_line_saying_how_to_prepare_by_hand(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    _offline(monkeypatch, _connection_error())
    with pytest.raises(data.DownloadError) as raised:
        data.prepare("mnist", data_dir=tmp_path)
    assert isinstance(raised.value, OSError) and "\n" not in str(raised.value)
    line = _one_line_error(["prepare-data", "mnist", "--data-dir", tmp_path],
                           "downloading or preparing 'mnist' failed (ConnectionError:",
                           "Failed to resolve 'storage.googleapis.com'",
                           "train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                           f"lipxai prepare-data mnist --manual-dir DIR --data-dir {tmp_path}",
                           f"TFDS_DATA_DIR={tmp_path}")
    assert line.startswith("lipxai prepare-data: error: downloading")
    _offline(monkeypatch, tfds.download.DownloadError("Failed to get url x. HTTP code: 404."))
    _one_line_error(["prepare-data", "mnist", "--data-dir", tmp_path], "HTTP code: 404", "--manual-dir DIR")


def test_quickstart_without_data_or_network_is_one_line(tmp_path, monkeypatch):
    _offline(monkeypatch, _connection_error())
    rc, out, err = _main(["quickstart", "--workdir", tmp_path / "quick", *TINY,
                          f"--config.data.data_dir={tmp_path / 'empty'}"])
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "downloading or preparing 'mnist' failed" in err and "--manual-dir DIR" in err
    assert "mnist is not prepared yet" in out and not (tmp_path / "quick").exists()


def test_prepare_errors_come_in_the_order_a_user_fixes_them(tmp_path, monkeypatch):
    """The user's own arguments first, then the missing extra, then the download."""
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # makes `import tensorflow` fail
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    for argv, needle in [(["foo"], "name must be one of"),
                         (["mnist", "--manual-dir", tmp_path / "missing"], "manual_dir"),
                         (["mnist", "--manual-dir", tmp_path / "file"], "is a file, not a folder"),
                         (["mnist", "--manual-dir", tmp_path / "empty"], "is empty"),
                         (["mnist", "--data-dir", tmp_path / "file"], "data_dir"),
                         (["mnist", "--data-dir", tmp_path / "data"], 'pip install "lipxai[prepare]"')]:
        _one_line_error(["prepare-data", *argv], needle)
    assert sorted(os.listdir(tmp_path)) == ["empty", "file"]


def test_version():
    rc, out, err = _main(["--version"])
    assert (rc, out, err) == (0, f"lipxai {metadata.version('lipxai')}\n", "")
    done = _lipxai("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"lipxai {metadata.version('lipxai')}"


# -- 5: partial runs write beside the full results -------------------------------------------------

def test_result_names():
    assert result_stem("certify", "test", {}) == "certify"
    assert result_stem("certify", "test", {"n": 8}) == "certify-test-n8"
    assert result_stem("evaluate", "train", {}) == "evaluate-train"
    assert result_stem("certify", "test[:100]", {"eps": (0.25, 2.0)}) == "certify-test_100-eps0.25_2.0"
    assert (result_stem("explanations", "test", {"methods": ("ig", "gradcam++"), "seed": 1})
            == "explanations-test-ig_gradcam++-seed1")
    assert result_stem("certify", "test", {"k": 5, "explanation": True}) == "certify-test-k5-explanation"


@pytest.mark.dataset("mnist")
def test_partial_runs_keep_the_quickstart_results(run_dir, monkeypatch):
    folder = run_dir
    before = {name: (folder / name).read_bytes() for name in STANDARD}
    full = json.loads(before["certify.json"])
    assert full["n"] == 10000
    # certify: the certificates themselves are tested elsewhere; here, where they go
    monkeypatch.setattr(certify_app, "certify_run", lambda run, eps, split, n: {**full, "n": n})
    rc, out, _ = _main(["certify", folder, "--n", 8])
    assert rc == 0 and f"written {folder / 'certify-test-n8.json'} (a partial run, so not certify.json" in out
    assert json.loads((folder / "certify-test-n8.json").read_text())["n"] == 8
    rc, out, _ = _main(["evaluate", folder, "--n", 2, "--samples", 1, "--methods", "saliency",
                        "--metrics", "sparseness", "--no-progress"])
    stem = folder / "evaluate-test-n2-saliency-sparseness-samples1"
    assert rc == 0 and f"written {stem}.json, {stem}.md" in out
    assert json.loads(stem.with_suffix(".json").read_text())["n"] == 2
    rc, out, _ = _main(["explain", folder, "--n", 2, "--method", "saliency"])
    assert rc == 0 and f"written {folder / 'explanations-test-n2-saliency.png'}" in out
    assert {name: (folder / name).read_bytes() for name in STANDARD} == before

    copy = shutil.copytree(folder, folder.parent / "forced")
    rc, out, _ = _main(["certify", copy, "--n", 8, "--force"])
    assert rc == 0 and out.splitlines()[-1] == f"written {copy}/certify.json"
    assert json.loads((copy / "certify.json").read_text())["n"] == 8
