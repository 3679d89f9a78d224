"""Execute every notebook in place, so that each is committed with its outputs (figures as PNG).

    TFDS_DATA_DIR=/path/to/tfds PYTHONPATH=$PWD python notebooks/regenerate.py [NAME ...]

Run from the repository root (or anywhere: paths are taken from this file). With no NAME, every
``notebooks/[0-9]*.ipynb`` is executed, in order; otherwise only the notebooks whose file name
contains one of the NAMEs. Each notebook runs in a fresh kernel of the Python that runs this
script (jupyter's ``python3`` kernel spec resolves ``python`` to ``sys.executable``), with
``notebooks/`` as its working folder, as the tests run them. The notebooks in ``FAST`` run with
``LIPXAI_FAST=1`` (the tests' fast mode, tiny models), the others in full.

Cell timings are not recorded, so a regeneration changes only what the cells print and draw.
"""

from __future__ import annotations

import glob
import os
import sys
import time

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = os.path.dirname(os.path.abspath(__file__))

#: Notebooks regenerated in fast mode (tiny models, few images), because their full run is too long
#: for a 2-core CPU: it trains a 1000-step run of the quickstart config (unless ``runs/quickstart``
#: exists) and a 1000-step CNN. 01_quickstart (a 600-step run) and 03 run in full: 01 took about
#: 19 minutes on 2 cores shared with other work (load 6-8), 03 about 2 minutes. The first cell of
#: a fast notebook says its outputs are fast.
FAST = frozenset({"02_explanations.ipynb", "04_evaluating_explanations.ipynb"})


def execute(path: str, *, fast: bool, timeout: int = 3600) -> float:
    """Execute the notebook at ``path`` in place; return the seconds it took."""
    notebook = nbformat.read(path, as_version=4)
    kernelspec = notebook.metadata.get("kernelspec")
    env_before = os.environ.get("LIPXAI_FAST")
    os.environ["LIPXAI_FAST"] = "1" if fast else "0"
    start = time.perf_counter()
    try:
        NotebookClient(notebook, timeout=timeout, kernel_name="python3", record_timing=False,
                       resources={"metadata": {"path": NOTEBOOKS}}).execute()
    finally:
        if env_before is None:
            os.environ.pop("LIPXAI_FAST")
        else:
            os.environ["LIPXAI_FAST"] = env_before
    if kernelspec is not None:
        notebook.metadata["kernelspec"] = kernelspec
    nbformat.write(notebook, path)
    return time.perf_counter() - start


def main(names: list[str]) -> None:
    paths = sorted(glob.glob(os.path.join(NOTEBOOKS, "[0-9]*.ipynb")))
    if names:
        paths = [p for p in paths if any(n in os.path.basename(p) for n in names)]
    repo = os.path.dirname(NOTEBOOKS)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))
    for path in paths:
        name = os.path.basename(path)
        fast = name in FAST
        print(f"{name}: running{' (fast mode)' if fast else ''} ...", flush=True)
        print(f"{name}: done in {execute(path, fast=fast):.0f} s, "
              f"{os.path.getsize(path) / 1024:.0f} KiB", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
