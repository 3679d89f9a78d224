"""Where a result comes from: command, date, commit and machine, written beside every figure."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess

import jax


def commit() -> str:
    """The short commit of the repository holding lipxai, with ``+dirty`` for uncommitted changes;
    ``"unknown"`` outside a git checkout."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True,
                              text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def machine() -> str:
    """The CPU count, platform and JAX device of this process."""
    device = jax.devices()[0]
    return (f"{os.cpu_count()} CPU cores, {platform.machine()} {platform.system()}, "
            f"jax {jax.__version__} on {device.platform} ({device.device_kind})")


def provenance(command: str) -> dict:
    """``{"command", "date", "commit", "machine"}`` for ``command``, dated now (UTC)."""
    return dict(command=command, date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                commit=commit(), machine=machine())
