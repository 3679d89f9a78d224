"""Cost and tightness of lipxai.bounds: forward IBP and gradient bounds vs plain passes.

    TFDS_DATA_DIR=/path/to/tfds python benchmarks/bounds.py [--quick] [--batch N]
        [--repeats N] [--train-steps N] [--models mlp,cnn[,mlp_groupsort,cnn_flax_pool]]

Models (float32, JAX functions of (params, x) on NHWC 28x28x1 inputs):
  mlp  784-1024-1024-10, ReLU.
  mlp_groupsort  (not run by default) the same MLP with GroupSort of pairs
       (lipxai.nn.group_sort), the activation of lipxai's 1-Lipschitz models.
  cnn  conv32-conv64-dense128 as in benchmarks/attributions.py: [conv3x3 (padding 1) -> ReLU
       -> max-pool 2x2] x (32, 64) -> flatten -> dense128 -> ReLU -> dense10; the max-pool is
       lipxai.nn.max_pool (its reshape form with a custom JVP, whose gradient is a
       first-maximum mask).
  cnn_flax_pool  (not run by default; --models mlp,cnn,cnn_flax_pool) the same CNN with
       flax.linen.max_pool, whose gradient is select_and_scatter_add.
Weights: He-normal initialisation (seed 0), then --train-steps (default 100; --quick: 20)
Adam steps (lr 1e-3, batch 128) of cross-entropy on MNIST train; --train-steps 0 keeps the
random initialisation. Bound widths depend strongly on the weights: trained networks give
wider intervals than random ones. Inputs are the first --batch (default 128; --quick: 16)
real MNIST test images (lipxai.data.load_split + preprocess); the script never uses random
data and exits 1 without them. Targets are the predicted classes.

What is timed, per model (all jax.jit-ed with the weights and inputs as arguments, compiled and
warmed up before timing, blocked with jax.block_until_ready):
  forward          fn(params, x) -> logits.
  forward_backward jax.grad of sum_b logit_target(b) w.r.t. x (the saliency gradient).
  forward_ibp      lipxai.bounds.interval(fn)(params, X) with X the L_inf box of radius eps
                   around x, clipped to [0, 1] (as gradient_bounds(domain=(0, 1))).
  gradient_bounds  lipxai.bounds.interval(jax.grad(score))(params, X): bounds on the input
                   gradient of the target logit over the box.
for eps in {1e-3, 1e-2}, and for the MLP also the parameter box W +/- 1e-3 |W|
(lipxai.bounds.params_box(relative=1e-3), built once outside the timed calls) at the nominal
input ("param_box_rel0.001").  All the
variants of one model are called once per repeat in turn, so the --repeats (default 7;
--quick: 3) interleave; medians are reported in seconds per call.
Ratios (goals in the issue: both <= 3):
  ibp_over_forward                    forward_ibp / forward
  gradient_bounds_over_forward_ibp    gradient_bounds / forward_ibp
(and gradient_bounds_over_forward_backward for reference).  Tightness: the mean width
(upper - lower) of the logit and of the gradient bounds, next to the mean |logit| and
|gradient| at x; every bound is checked to contain the nominal value.
The tighter method: for each input box, gradient bounds with interval(..., method="symbolic")
(linear bounds of the forward values in terms of the input, lipxai.bounds.symbolic) against
the default method="ibp", on the first --symbolic-batch images (default 32; 4 for the CNN,
whose symbolic coefficients take about 230 MB per image): mean gradient-bound width of both,
the width ratio and the time ratio symbolic / ibp (medians of 3 interleaved calls).
On a GPU every product is computed at full float32 precision (jax_default_matmul_precision
"highest"): the interval rules always are (TF32 would make bounds unsound), so the plain
passes they are compared with are too.
Other processes on the machine skew the timings: check load_average_1min.  Prints one JSON
object (progress goes to stderr).

    python benchmarks/bounds.py --layer-compile [--layers groupsort8,fullsort256,...]

instead times how long gradient bounds take to build, per lipxai layer: for a small model
around each layer (LAYER_CASES: the layer between OrthoDense / OrthoConv layers at its usual
sizes, and the quickstart's zoo.cnn), jax.jit(gradient_bounds(fn, x, target, eps=0.01)) with
the weights and x as arguments (batch 4) is lowered (trace_s: the jaxpr interpretation at
trace time, in Python) and compiled (xla_compile_s); grad_compile_s is the lower + compile of
the plain input gradient, for reference.  Compile times do not depend on the values, so these
models keep their initialisation and x is uniform noise in [0, 1] (no data needed).  A layer
whose bounds meet a primitive without an interval rule is reported as unsupported.  One JSON
object: seconds per layer case.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout's lipxai
from lipxai import bounds, data
from lipxai import nn as lipxai_nn

from _common import batch_and_repeats, cnn, compile_jax, interleaved, timing_parser, versions  # noqa: E402

SEED, CLASSES, LR, TRAIN_BATCH = 0, 10, 1e-3, 128
EPSILONS = (1e-3, 1e-2)
PARAM_RELATIVE = 1e-3
GOAL = 3.0


# models


def he(key, shape, fan_in):
    return jax.random.normal(key, shape, jnp.float32) * np.sqrt(2.0 / fan_in)


def init_mlp(key, sizes=(784, 1024, 1024, CLASSES)):
    keys = jax.random.split(key, len(sizes) - 1)
    return [(he(k, (a, b), a), jnp.zeros(b, jnp.float32))
            for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)]


def mlp(params, x):
    h = x.reshape(x.shape[0], -1)
    for w, b in params[:-1]:
        h = jax.nn.relu(h @ w + b)
    w, b = params[-1]
    return h @ w + b


def mlp_groupsort(params, x):
    """:func:`mlp` with GroupSort of pairs (lipxai.nn.group_sort: ``min``/``max`` of slices)
    instead of ReLU, the activation of lipxai's 1-Lipschitz models."""
    h = x.reshape(x.shape[0], -1)
    for w, b in params[:-1]:
        h = lipxai_nn.group_sort(h @ w + b, 2)
    w, b = params[-1]
    return h @ w + b


def init_cnn(key):
    k = jax.random.split(key, 4)
    return {
        "conv1": (he(k[0], (3, 3, 1, 32), 9), jnp.zeros(32, jnp.float32)),
        "conv2": (he(k[1], (3, 3, 32, 64), 9 * 32), jnp.zeros(64, jnp.float32)),
        "dense1": (he(k[2], (7 * 7 * 64, 128), 7 * 7 * 64), jnp.zeros(128, jnp.float32)),
        "dense2": (he(k[3], (128, CLASSES), 128), jnp.zeros(CLASSES, jnp.float32)),
    }


def cnn_flax_pool(params, x):
    """:func:`cnn` with flax.linen.max_pool (reduce_window_max; its gradient is XLA's
    select_and_scatter_add, which lipxai.bounds has a dedicated rule for)."""
    return cnn(params, x, pool=flax.linen.max_pool)


MODELS = {"mlp": (init_mlp, mlp, "784-1024-1024-10 ReLU MLP"),
          "mlp_groupsort": (init_mlp, mlp_groupsort, "784-1024-1024-10 GroupSort(2) MLP"),
          "cnn": (init_cnn, cnn, "conv32-conv64-dense128 CNN, ReLU, lipxai.nn.max_pool 2x2"),
          "cnn_flax_pool": (init_cnn, cnn_flax_pool,
                            "conv32-conv64-dense128 CNN, ReLU, flax.linen.max_pool 2x2")}


def train(fn, params, steps, images, labels):
    """``steps`` Adam steps of cross-entropy on random MNIST train batches; returns (params, s)."""
    if steps == 0:
        return params, 0.0
    opt = optax.adam(LR)

    @jax.jit
    def step(p, state, xb, yb):
        loss = lambda q: optax.softmax_cross_entropy_with_integer_labels(fn(q, xb), yb).mean()
        updates, state = opt.update(jax.grad(loss)(p), state)
        return optax.apply_updates(p, updates), state

    state, rng = opt.init(params), np.random.default_rng(SEED)
    start = time.perf_counter()
    for _ in range(steps):
        idx = rng.integers(0, len(labels), TRAIN_BATCH)
        params, state = step(params, state, data.preprocess(images[idx]), labels[idx])
    jax.block_until_ready(params)
    return params, time.perf_counter() - start


# the timed functions


def input_box(x, eps):
    """``[x - eps, x + eps]`` clipped to [0, 1] (eps may be a tracer)."""
    return bounds.Interval(jnp.clip(x - eps, 0.0, 1.0), jnp.clip(x + eps, 0.0, 1.0))


def score_fn(fn):
    def score(params, x, target):
        return jnp.sum(jnp.take_along_axis(fn(params, x), target[:, None], 1))
    return score


def make_functions(fn):
    grad_x = jax.grad(score_fn(fn), argnums=1)
    return {
        "forward": lambda p, x, t, eps: fn(p, x),
        "forward_backward": lambda p, x, t, eps: grad_x(p, x, t),
        "forward_ibp": lambda p, x, t, eps: bounds.interval(fn)(p, input_box(x, eps)),
        "gradient_bounds": lambda p, x, t, eps: bounds.interval(grad_x)(
            p, input_box(x, eps), t),
    }


def make_param_box_functions(fn):
    """Bounds over a parameter box (a pytree of Intervals, built outside the timed call)."""
    grad_x = jax.grad(score_fn(fn), argnums=1)
    return {
        "forward_ibp": lambda pbox, x, t, eps: bounds.interval(fn)(pbox, x),
        "gradient_bounds": lambda pbox, x, t, eps: bounds.interval(grad_x)(pbox, x, t),
    }


# timing


def log(message):
    print(f"[bounds {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def sig(value, digits=4):
    return float(f"{float(value):.{digits}g}")


def check_contains(name, interval, value):
    """The bounds must contain the nominal value (up to float32 rounding)."""
    lo, hi, v = (np.asarray(a, np.float64) for a in (interval.lower, interval.upper, value))
    tol = 1e-5 * (1.0 + np.abs(v))
    if not (np.all(lo <= v + tol) and np.all(v - tol <= hi)):
        raise SystemExit(f"{name}: the bounds do not contain the nominal value")


def widths(interval, nominal):
    width = np.asarray(interval.upper - interval.lower, np.float64)
    return {"mean_width": sig(width.mean()), "max_width": sig(width.max()),
            "mean_abs_value": sig(np.abs(np.asarray(nominal)).mean()),
            "finite": bool(np.isfinite(width).all())}


def symbolic_tightness(fn, params, x, target, eps):
    """Gradient-bound widths and time of method="symbolic" against "ibp" on ``x``."""
    grad_x = jax.grad(score_fn(fn), argnums=1)
    calls, last = {}, {}
    for method in bounds.METHODS:
        f = lambda p, z, t, e, m=method: bounds.interval(grad_x, method=m)(p, input_box(z, e), t)
        calls[method], _ = compile_jax(f, params, x, target, eps)
    times, last = interleaved(calls, 3)
    gradient = jax.jit(grad_x)(params, x, target)
    for method, b in last.items():
        check_contains(f"{method} gradient", b, gradient)
    width = {m: float(np.mean(np.asarray(b.upper - b.lower, np.float64))) for m, b in last.items()}
    return {"images": int(x.shape[0]),
            "mean_gradient_width": {m: sig(w) for m, w in width.items()},
            "width_ibp_over_symbolic": round(width["ibp"] / width["symbolic"], 3),
            "time_symbolic_over_ibp": round(times["symbolic"] / times["ibp"], 1)}


def bench_model(name, args, batch, repeats, images, labels, x, train_data):
    init, fn, description = MODELS[name]
    params = init(jax.random.PRNGKey(SEED))
    log(f"{name}: training {args.train_steps} steps")
    params, train_s = train(fn, params, args.train_steps, *train_data)
    logits = jax.jit(fn)(params, x)
    target = jnp.argmax(logits, 1).astype(jnp.int32)
    accuracy = float(np.mean(np.asarray(target) == labels[:batch]))

    cases = {f"eps{eps:g}": (make_functions(fn), params, jnp.float32(eps)) for eps in EPSILONS}
    if name == "mlp":
        cases[f"param_box_rel{PARAM_RELATIVE:g}"] = (
            make_param_box_functions(fn), bounds.params_box(params, relative=PARAM_RELATIVE),
            jnp.float32(0.0))
    variants, compile_s = {}, {}
    base = make_functions(fn)
    for key in ("forward", "forward_backward"):
        variants[key], compile_s[key] = compile_jax(base[key], params, x, target, jnp.float32(0))
    for case, (functions, first_arg, eps) in cases.items():
        for key in ("forward_ibp", "gradient_bounds"):
            label = f"{key}/{case}"
            log(f"{name}: compiling {label}")
            variants[label], compile_s[label] = compile_jax(functions[key], first_arg, x, target,
                                                            eps)
    log(f"{name}: timing {len(variants)} variants x {repeats} repeats")
    times, last = interleaved(variants, repeats)

    gradient = last["forward_backward"]
    forward, forward_backward = times["forward"], times["forward_backward"]
    out_cases = {}
    for case in cases:
        ibp, gb = last[f"forward_ibp/{case}"], last[f"gradient_bounds/{case}"]
        check_contains(f"{name} {case} logits", ibp, logits)
        check_contains(f"{name} {case} gradient", gb, gradient)
        t_ibp, t_gb = times[f"forward_ibp/{case}"], times[f"gradient_bounds/{case}"]
        out_cases[case] = {
            "forward_ibp_s": sig(t_ibp), "gradient_bounds_s": sig(t_gb),
            "ibp_over_forward": round(t_ibp / forward, 3),
            "gradient_bounds_over_forward_ibp": round(t_gb / t_ibp, 3),
            "gradient_bounds_over_forward_backward": round(t_gb / forward_backward, 3),
            "logits": widths(ibp, logits),
            "gradient": widths(gb, gradient),
            "compile_s": {k: round(compile_s[f"{k}/{case}"], 2)
                          for k in ("forward_ibp", "gradient_bounds")},
        }
    n_sym = min(batch, args.symbolic_batch or (4 if name.startswith("cnn") else 32))
    for eps in EPSILONS:
        log(f"{name}: symbolic vs ibp at eps {eps:g} on {n_sym} images")
        out_cases[f"eps{eps:g}"]["symbolic_vs_ibp"] = symbolic_tightness(
            fn, params, x[:n_sym], target[:n_sym], jnp.float32(eps))
    return {
        "model": description,
        "weights": (f"He-normal init (seed {SEED}) + {args.train_steps} Adam steps "
                    f"(lr {LR}, batch {TRAIN_BATCH}) on MNIST train" if args.train_steps
                    else f"He-normal init (seed {SEED}), untrained"),
        "train_s": round(train_s, 2),
        "accuracy_on_batch": round(accuracy, 4),
        "forward_s": sig(forward), "forward_backward_s": sig(forward_backward),
        "forward_backward_over_forward": round(forward_backward / forward, 3),
        "compile_s": {k: round(compile_s[k], 2) for k in ("forward", "forward_backward")},
        "cases": out_cases,
        "goals_met": {case: (c["ibp_over_forward"] <= GOAL,
                             c["gradient_bounds_over_forward_ibp"] <= GOAL)
                      for case, c in out_cases.items()},
    }


# compile time of gradient bounds, per lipxai layer


def _between_dense(*layers, width=64):
    """OrthoDense(width) -> layers -> OrthoDense(10) on [B, 64] features."""
    return (flax.linen.Sequential([lipxai_nn.OrthoDense(width), *layers,
                                   lipxai_nn.OrthoDense(CLASSES)]), (64,))


def _after_conv(*layers, method="aol"):
    """OrthoConv(16, 3) -> layers -> Flatten -> OrthoDense(10) on [B, 8, 8, 3] images."""
    return (flax.linen.Sequential([lipxai_nn.OrthoConv(16, 3, method=method), *layers,
                                   lipxai_nn.Flatten(), lipxai_nn.OrthoDense(CLASSES)]),
            (8, 8, 3))


def _groupsort_mlp(group_size):
    gs = lipxai_nn.GroupSort
    return _between_dense(gs(group_size), lipxai_nn.OrthoDense(64), gs(group_size))


#: name -> () -> (flax module, input shape without the batch): each lipxai layer at its usual
#: sizes between OrthoDense / OrthoConv layers, and the quickstart model.
LAYER_CASES = {
    **{f"groupsort{g}": (lambda g=g: _groupsort_mlp(g)) for g in (2, 4, 8, 16)},
    **{f"fullsort{n}": (lambda n=n: _between_dense(lipxai_nn.FullSort(), width=n))
       for n in (64, 256)},
    "maxmin": lambda: _between_dense(lipxai_nn.MaxMin()),
    "householder": lambda: _between_dense(lipxai_nn.Householder()),
    **{f"orthodense_{m}": (lambda m=m: (flax.linen.Sequential(
        [lipxai_nn.OrthoDense(64, method=m), lipxai_nn.GroupSort(2),
         lipxai_nn.OrthoDense(CLASSES, method=m)]), (64,))) for m in lipxai_nn.DENSE_METHODS},
    **{f"orthoconv_{m}": (lambda m=m: _after_conv(lipxai_nn.GroupSort(2), method=m))
       for m in lipxai_nn.CONV_METHODS},
    "l2normpool": lambda: _after_conv(lipxai_nn.GroupSort(2), lipxai_nn.L2NormPool(2)),
    "sll_dense": lambda: _between_dense(lipxai_nn.SLLDense()),
    "sll_conv": lambda: _after_conv(lipxai_nn.GroupSort(2), lipxai_nn.SLLConv()),
    "zoo_cnn_quickstart": lambda: (lipxai_nn.zoo.cnn(
        CLASSES, channels=(32, 64), dense=(256,), conv_method="aol", dense_method="bjorck",
        group_size=2, downsample="patch"), (28, 28, 1)),
}


def layer_compile_times(name, batch=4, eps=0.01):
    """Trace (lower) and XLA compile seconds of jitted gradient bounds for one LAYER_CASES
    model, and the lower + compile seconds of the plain input gradient."""
    module, shape = LAYER_CASES[name]()
    x = jax.random.uniform(jax.random.PRNGKey(SEED), (batch, *shape), jnp.float32)
    variables = module.init(jax.random.PRNGKey(SEED), x)
    target = jnp.zeros(batch, jnp.int32)

    def bounds_fn(v, z):
        return bounds.gradient_bounds(lambda u: module.apply(v, u), z, target, eps=eps)

    def grad_fn(v, z):
        return jax.grad(lambda u: jnp.sum(module.apply(v, u)[:, 0]))(z)

    start = time.perf_counter()
    lowered = jax.jit(bounds_fn).lower(variables, x)
    traced = time.perf_counter()
    lowered.compile()
    compiled = time.perf_counter()
    jax.jit(grad_fn).lower(variables, x).compile()
    return {"trace_s": round(traced - start, 2), "xla_compile_s": round(compiled - traced, 2),
            "total_s": round(compiled - start, 2),
            "grad_compile_s": round(time.perf_counter() - compiled, 2)}


def layer_compile_main(names):
    load_at_start = os.getloadavg()[0]
    results = {}
    for name in names:
        log(f"layer compile: {name}")
        try:
            results[name] = layer_compile_times(name)
        except NotImplementedError as error:  # a primitive without an interval rule
            results[name] = {"unsupported": str(error).split(" (")[0]}
    print(json.dumps({
        "benchmark": "bounds_layer_compile",
        "what": "jax.jit(gradient_bounds(fn, x, target, eps=0.01)) lowered (trace_s) and "
                "compiled (xla_compile_s), batch 4, weights as arguments",
        "backend": jax.default_backend(), "cpu_count": os.cpu_count(),
        "load_average_1min": {"start": round(load_at_start, 2),
                              "end": round(os.getloadavg()[0], 2)},
        "versions": versions("jax", "jaxlib", "flax", "numpy"),
        "layers": results,
    }, indent=1))


def main():
    parser = timing_parser(__doc__, batch=128, repeats=7, quick_repeats=3,
                           quick_extra=", 20 training steps")
    parser.add_argument("--train-steps", type=int,
                        help="Adam steps on MNIST train (default 100, quick 20; 0: random init)")
    parser.add_argument("--symbolic-batch", type=int, default=None,
                        help="images for the symbolic-vs-ibp comparison (default 32; CNN 4)")
    parser.add_argument("--models", default="mlp,cnn", help="comma-separated subset of mlp,mlp_groupsort,cnn,cnn_flax_pool (default mlp,cnn)")
    parser.add_argument("--layer-compile", action="store_true",
                        help="only time the trace and XLA compile of gradient bounds per lipxai "
                             "layer (no data needed)")
    parser.add_argument("--layers", default=",".join(LAYER_CASES),
                        help="with --layer-compile: comma-separated subset of "
                             f"{','.join(LAYER_CASES)}")
    args = parser.parse_args()
    if args.layer_compile:
        names = [n for n in args.layers.split(",") if n]
        if not names or any(n not in LAYER_CASES for n in names):
            parser.error(f"--layers must be a comma-separated subset of {','.join(LAYER_CASES)}")
        return layer_compile_main(names)
    batch, repeats = batch_and_repeats(args)
    if args.train_steps is None:
        args.train_steps = 20 if args.quick else 100
    models = [m for m in args.models.split(",") if m]
    if min(batch, repeats) < 1 or args.train_steps < 0:
        parser.error("--batch and --repeats must be >= 1, --train-steps >= 0")
    if not models or any(m not in MODELS for m in models):
        parser.error(f"--models must be a comma-separated subset of {','.join(MODELS)}")
    load_at_start = os.getloadavg()[0]
    if jax.default_backend() == "gpu":  # the bound rules compute at full precision anyway
        jax.config.update("jax_default_matmul_precision", "highest")

    try:
        images, labels = data.load_split("mnist", "test")
        train_data = data.load_split("mnist", "train") if args.train_steps else (None, None)
    except data.DatasetNotFoundError as error:
        print(error, file=sys.stderr)
        sys.exit(1)
    x = jnp.asarray(data.preprocess(images[:batch]))

    results = {name: bench_model(name, args, batch, repeats, images, labels, x, train_data)
               for name in models}
    print(json.dumps({
        "benchmark": "bounds",
        "batch": batch, "repeats": repeats, "epsilons": list(EPSILONS),
        "param_box_relative": PARAM_RELATIVE, "goal_ratio": GOAL,
        "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
        "matmul_precision": str(jax.config.jax_default_matmul_precision or "default"),
        "cpu_count": os.cpu_count(),
        "load_average_1min": {"start": round(load_at_start, 2),
                              "end": round(os.getloadavg()[0], 2)},
        "versions": versions("jax", "jaxlib", "flax", "numpy"),
        "models": results,
    }, indent=1))


if __name__ == "__main__":
    main()
