"""The timings of one benchmark command at two commits, side by side, from one process run.

    python benchmarks/compare_commits.py BEFORE AFTER [--rounds N] [--keep-output DIR] \\
        -- python benchmarks/attributions.py --quick

Each commit is checked out in a temporary detached git worktree (``git worktree add --detach``)
and the command runs with that tree as working directory and as PYTHONPATH, so each side runs
its own benchmark scripts on its own lipxai. The two sides alternate for --rounds rounds
(default 3) and the order flips every round (before, after; after, before; ...), so a drift of
the machine's load falls on both sides alike. The command must print one JSON object (the
benchmarks' convention); the worktrees are removed at the end, also on failure.

Timing keys are the numeric leaves of that JSON whose path ("a/b/c") names a duration or a rate
(a component ``s``, ``ms``, ``seconds`` or ``per_s``, alone or as a ``_``-suffix, or
``s_per_image``); rates (``per_s``) are better higher, durations lower. Per key:
  before, after     the value of every round, in round order;
  ratio             median(after) / median(before);
  per_round_ratio   after / before within each round;
  spread            the larger relative range (max - min) / median of the two sides;
  outside_noise     every round's ratio on the same side of 1 and |ratio - 1| > spread
                    (spread and verdict are null with one round).
The load average (/proc/loadavg) is recorded before every run: other processes skew timings.
Prints one JSON object (progress goes to stderr).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIDES = ("before", "after")
TIMING_KEY = re.compile(r"(^|[/_])(s|ms|seconds|per_s|s_per_image)(/|$)")
RATE_KEY = re.compile(r"(^|[/_])per_s(/|$)")


def log(message):
    print(f"[compare_commits {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def git(*args, cwd=REPO):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def describe(commit):
    """Full hash and subject line of ``commit``."""
    full, subject = git("log", "-1", "--format=%H%n%s", commit).split("\n", 1)
    return {"commit": full, "subject": subject}


def load_average():
    """The 1, 5 and 15 minute load averages and the running/total task counts."""
    fields = Path("/proc/loadavg").read_text().split()
    return {"1min": float(fields[0]), "5min": float(fields[1]), "15min": float(fields[2]),
            "tasks": fields[3]}


def machine():
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}


def leaves(tree, prefix=""):
    """``{"a/b/c": number}`` for every int or float leaf of a JSON value (not booleans)."""
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items()
                for k, v in leaves(value, f"{prefix}{key}/").items()}
    if isinstance(tree, list):
        return {k: v for i, value in enumerate(tree)
                for k, v in leaves(value, f"{prefix}{i}/").items()}
    if isinstance(tree, (int, float)) and not isinstance(tree, bool):
        return {prefix.rstrip("/"): tree}
    return {}


def timing_values(result):
    return {k: v for k, v in leaves(result).items() if TIMING_KEY.search(k)}


def run_once(tree, command, keep):
    """Run ``command`` in ``tree``; returns (parsed JSON, wall seconds, load average at start)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    load = load_average()
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if keep is not None:
        keep.write_text(proc.stdout)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(command)} failed in {tree} (exit {proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    return json.loads(proc.stdout), wall, load


def summarise(before, after):
    """Ratio, per-round ratios, spread and the noise verdict of one timing key."""
    mb, ma = statistics.median(before), statistics.median(after)
    per_round = [a / b if b else None for a, b in zip(after, before, strict=True)]
    spread = max((max(v) - min(v)) / statistics.median(v) if statistics.median(v) else 0.0
                 for v in (before, after))
    ratio = ma / mb if mb else None
    known = [r for r in per_round if r is not None]
    same_side = bool(known) and (all(r > 1 for r in known) or all(r < 1 for r in known))
    if len(before) < 2:  # one round: no spread, no verdict
        spread = same_side = None
    return {"before": before, "after": after, "ratio": None if ratio is None else round(ratio, 3),
            "per_round_ratio": [None if r is None else round(r, 3) for r in per_round],
            "spread": None if spread is None else round(spread, 3),
            "outside_noise": None if spread is None else (
                ratio is not None and same_side and abs(ratio - 1) > spread)}


def compare(commits, command, rounds, keep_dir):
    """Run the rounds in two temporary worktrees; returns the comparison as a dict."""
    tmp = Path(tempfile.mkdtemp(prefix="lipxai-compare-"))
    trees = {side: tmp / side for side in SIDES}
    try:
        for side in SIDES:
            git("worktree", "add", "--detach", str(trees[side]), commits[side])
        runs = []
        for r in range(rounds):
            order = SIDES if r % 2 == 0 else SIDES[::-1]
            entry = {"order": list(order)}
            for side in order:
                log(f"round {r + 1}/{rounds}: {side} ({commits[side]})")
                keep = None if keep_dir is None else keep_dir / f"round{r + 1}_{side}.json"
                result, wall, load = run_once(trees[side], command, keep)
                entry[side] = {"load_average_at_start": load, "wall_s": round(wall, 1),
                               "timings": timing_values(result)}
            runs.append(entry)
    finally:
        for side in SIDES:
            if trees[side].exists():
                subprocess.run(["git", "worktree", "remove", "--force", str(trees[side])],
                               cwd=REPO, capture_output=True)
        subprocess.run(["git", "worktree", "prune"], cwd=REPO, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    keys = [k for k in runs[0]["before"]["timings"]
            if all(k in run[side]["timings"] for run in runs for side in SIDES)]
    timings = {}
    for key in keys:
        timings[key] = summarise(*([run[side]["timings"][key] for run in runs] for side in SIDES))
        timings[key]["higher_is_better"] = bool(RATE_KEY.search(key))
    return runs, timings


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     usage="%(prog)s BEFORE AFTER [options] -- COMMAND ...")
    parser.add_argument("before", help="the commit before the change")
    parser.add_argument("after", help="the commit after the change")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--keep-output", type=Path,
                        help="folder for every run's JSON output (round<N>_<side>.json)")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args, command = parser.parse_args(argv[:split]), argv[split + 1:]
    if not command or args.rounds < 1:
        parser.error("give a benchmark command after -- and --rounds >= 1")
    if args.keep_output is not None:
        args.keep_output.mkdir(parents=True, exist_ok=True)
    described = {"before": describe(args.before), "after": describe(args.after)}
    commits = {side: described[side]["commit"] for side in SIDES}
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    load_start = load_average()
    try:
        runs, timings = compare(commits, command, args.rounds, args.keep_output)
    except RuntimeError as error:
        raise SystemExit(str(error)) from None
    print(json.dumps({
        "command": command, "date": date, "rounds": args.rounds, "machine": machine(),
        **described,
        "load_average": {"start": load_start, "end": load_average()},
        "runs": runs, "timings": timings,
        "outside_noise": sorted(k for k, t in timings.items() if t["outside_noise"]),
    }, indent=1))


if __name__ == "__main__":
    main()
