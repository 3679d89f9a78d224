"""The README is a user's guide that works as written: at most 200 lines, the install and test
commands first, and every Python block runs.

The blocks run in order in one namespace, as a reader runs them, except the blocks that load a
trained run (``lx.load_run``): those are self-contained and run in a folder where
``runs/quickstart`` is a tiny run trained here on real MNIST (a few steps; the README's code is
checked, not the model's quality).
"""

import os
import re

import pytest
from _tiny_run import TINY

from lipxai import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
COMMANDS = ['pip install -e ".[dev,prepare]" && lipxai quickstart',
            'python -m pip install -e ".[dev]" && python -m pytest']


def _read() -> str:
    with open(README, encoding="utf-8") as f:
        return f.read()


def _blocks(lang: str) -> list[tuple[int, str]]:
    """``(first line number, code)`` of every fenced ```lang block of the README, in order."""
    text = _read()
    return [(text.count("\n", 0, m.start()) + 2, m.group(1))
            for m in re.finditer(rf"^```{lang}\n(.*?)^```$", text, flags=re.M | re.S)]


def _needs_run(code: str) -> bool:
    return "load_run(" in code


def _exec(line: int, code: str, namespace: dict) -> None:
    """Run one block; a failure names the README line where the block starts."""
    exec(compile(code, f"README.md (block at line {line})", "exec"), namespace)


def test_readme_is_short_and_starts_with_the_two_commands():
    text = _read()
    assert len(text.splitlines()) <= 200, "README.md must stay a short user's guide (<= 200 lines)"
    first = _blocks("bash")[0]
    assert text.lstrip().startswith("# lipxai\n\n```bash\n"), "the commands come first"
    assert first[1].splitlines() == COMMANDS
    with open(os.path.join(REPO, ".ci", "run"), encoding="utf-8") as f:
        assert COMMANDS[1] in f.read(), ".ci/run runs the README's test command"


def test_readme_has_python_examples():
    blocks = _blocks("python")
    assert len(blocks) >= 6
    assert any(_needs_run(code) for _, code in blocks)


def test_readme_python_blocks_run_in_order():
    namespace: dict = {}
    for line, code in _blocks("python"):
        if not _needs_run(code):
            _exec(line, code, namespace)


@pytest.fixture(scope="module")
def quickstart_folder(tmp_path_factory):
    """A folder holding ``runs/quickstart``: the quickstart config, tiny and trained 2 steps."""
    folder = tmp_path_factory.mktemp("readme")
    workdir = folder / "runs" / "quickstart"
    rc = cli.main(["train", "--config", os.path.join(REPO, "configs", "mnist_lip.py"),
                   "--workdir", str(workdir), *TINY,
                   "--config.train.num_steps=2", "--config.train.eval_every=2"])
    assert rc == 0
    return folder


@pytest.mark.dataset("mnist")
def test_readme_python_blocks_on_a_trained_run(quickstart_folder, monkeypatch):
    monkeypatch.chdir(quickstart_folder)
    blocks = [(line, code) for line, code in _blocks("python") if _needs_run(code)]
    assert blocks
    for line, code in blocks:
        _exec(line, code, {})
