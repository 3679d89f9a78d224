"""Quality (not speed) of the boundary search and of transport counterfactuals on a trained run.

    python benchmarks/boundary_quality.py runs/quickstart --n 1000

Prints JSON: per search method the success rate, the margin range at the returned points and
the mean distance relative to the best of the PGD ladder and CW run separately (the
boundary-attribution reference pipeline); for the transport counterfactual at ``t`` the share
of flipped predictions and its distance relative to the closest point the searches found and to
each search's point, as the mean and median of the per-example ratios and as the ratio of the
mean distances (the statistic of the searches' ``mean_distance_over_pgd_cw``).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from lipxai import boundary, explain, load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir")
    parser.add_argument("--n", type=int, default=1000, help="test images (default 1000)")
    parser.add_argument("--t", type=float, default=1.1, help="transport step multiple (default 1.1)")
    parser.add_argument("--batch", type=int, default=250, help="search chunk size (memory)")
    parser.add_argument("--methods", default="pgd,cw,deepfool,transport")
    args = parser.parse_args()

    run = load_run(args.workdir)
    x, labels = run.split("test", args.n)
    x = jnp.asarray(x)
    fn = run.apply
    pred = jnp.argmax(fn(x), axis=1)
    out = {"workdir": args.workdir, "n": args.n,
           "accuracy": float(jnp.mean(pred == jnp.asarray(labels[:args.n])))}
    dist = {}
    for method in args.methods.split(","):
        start = time.perf_counter()
        r = jax.block_until_ready(boundary.search(fn, x, pred, method=method, batch_size=args.batch))
        ok = np.asarray(r.success)
        m = np.asarray(r.margins)[ok]
        dist[method] = np.where(ok, np.asarray(r.distances), np.inf)
        out[method] = {"success": float(ok.mean()), "margin_min": float(m.min()), "margin_max": float(m.max()),
                       "mean_distance": float(np.asarray(r.distances)[ok].mean()),
                       "seconds": time.perf_counter() - start}
    best = np.min([dist[k] for k in dist], axis=0)
    if "pgd" in dist and "cw" in dist:
        reference = np.minimum(dist["pgd"], dist["cw"])
        keep = np.isfinite(reference)
        for method in dist:
            out[method]["mean_distance_over_pgd_cw"] = float(dist[method][keep].mean() / reference[keep].mean())
    cf = explain.counterfactual(fn, x, pred, method="transport", t=args.t)
    flipped = np.asarray(cf.flipped)
    keep = flipped & np.isfinite(best)
    ratio = np.asarray(cf.distances)[keep] / best[keep]
    out["transport_counterfactual"] = {"t": args.t, "flipped": float(flipped.mean()),
                                       "distance_over_best_search_mean": float(ratio.mean()),
                                       "distance_over_best_search_median": float(np.median(ratio)),
                                       "distance_over_best_search_p95": float(np.quantile(ratio, 0.95)),
                                       # the statistic of the searches' mean_distance_over_pgd_cw
                                       "mean_distance_over_best_search": float(
                                           np.asarray(cf.distances)[keep].mean() / best[keep].mean())}
    for method in dist:   # against each search alone (lipxai.boundary.search's default is pgd)
        keep = flipped & np.isfinite(dist[method])
        alone = np.asarray(cf.distances)[keep] / dist[method][keep]
        out["transport_counterfactual"][f"distance_over_{method}_mean"] = float(alone.mean())
        out["transport_counterfactual"][f"distance_over_{method}_median"] = float(np.median(alone))
        out["transport_counterfactual"][f"mean_distance_over_{method}"] = float(
            np.asarray(cf.distances)[keep].mean() / dist[method][keep].mean())
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
