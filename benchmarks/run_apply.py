"""The function a user reaches first, ``lx.load_run(dir).apply``, against the model's own apply.

    python benchmarks/run_apply.py runs/quickstart --n 64

Times ``lx.boundary.search(fn, x, y)`` (PGD, L2; compile included, the first call of a fresh
function) for ``fn`` = ``run.apply`` (the exported model, :meth:`lipxai.train.rundir.Run.apply`),
for the exported model as a ``Partial`` over its weights (what the command's apps used before
``run.apply`` ran the exported model) and, unless ``--skip-reparametrised``, for the trained
model applied to its reparametrised variables (what ``run.apply`` computed before); checks that
they give the same logits. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from lipxai import boundary, load_run


def _timed(fn, x, y) -> float:
    start = time.perf_counter()
    jax.block_until_ready(boundary.search(fn, x, y).points)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir")
    parser.add_argument("--n", type=int, default=64, help="test images (default 64)")
    parser.add_argument("--skip-reparametrised", action="store_true",
                        help="leave out the reparametrised model (minutes of XLA constant folding)")
    args = parser.parse_args()

    run = load_run(args.workdir)
    x, _ = run.split("test", args.n)
    x = jnp.asarray(x)
    plain, plain_variables = run.export()
    functions = {
        "run.apply (exported)": run.apply,
        "Partial(exported apply, weights)": jax.tree_util.Partial(
            lambda variables, z: plain.apply(variables, run.normalize(z)), plain_variables),
        "model.apply (reparametrised)": jax.tree_util.Partial(run.apply_variables, run.variables),
    }
    if args.skip_reparametrised:
        del functions["model.apply (reparametrised)"]
    logits = run.apply(x)
    y = jnp.argmax(logits, axis=1)
    out = dict(n=args.n, devices=str(jax.devices()),
               max_abs_logit_difference={name: float(np.max(np.abs(fn(x) - logits)))
                                         for name, fn in functions.items()},
               search_seconds={name: _timed(fn, x, y) for name, fn in functions.items()})
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
