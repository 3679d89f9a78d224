"""Seconds per image of saliency, IG-64, SmoothGrad-32 and PGD boundary search: lipxai vs Captum.

    TFDS_DATA_DIR=/path/to/tfds python benchmarks/attributions.py [--quick] [--batch N]
        [--repeats N] [--boundary-batch N] [--train-steps N] [--methods ...] [--torch-device D]

Model and inputs: _torch_reference.Reference, the conv32-conv64-dense128 CNN (max-pool: its JAX
side is lipxai.nn.max_pool, whose gradient avoids XLA's select_and_scatter_add, slow on CPU)
after --train-steps Adam steps on MNIST train (default 100; 0: untrained), on the first --batch
(default 128; --quick: 16) real MNIST test images (the script exits 1 without them); targets
are the predicted classes. lipxai functions are jax.jit-ed with the weights as arguments (no
constant folding), compiled and warmed up before timing, blocked with jax.block_until_ready.
Captum runs on torch CPU with os.cpu_count() threads, or on CUDA when JAX runs on a GPU
(--torch-device; timed calls then synchronise; no TF32 on either side), warmed up by one untimed
call (the boundary reference: its first repeat, which the median drops). Within a method every
variant (lipxai chunk sizes, Captum settings) is called once per repeat in turn (--repeats,
default 5; --quick: 2; saliency, ~50x shorter: 10 x --repeats); medians, in seconds per image.
  saliency      lipxai.explain.saliency vs captum Saliency(abs=False).
  ig64          integrated_gradients(steps=64, riemann_middle, zero baseline) at chunk sizes
                8/16/32/64 steps and at lipxai's default (batch_size=None; default_chunk: 1
                step at batch 128, 10 at batch 16) vs captum IntegratedGradients(n_steps=64,
                riemann_middle) with internal_batch_size = lipxai's default chunk x batch
                (same memory), 16 steps x batch, and unbounded (Captum's default).
  ig_gl16       lipxai gausslegendre-16 (default chunk; a quarter of the gradients), timed in
                the ig64 group, vs Captum riemann_middle-64 at ig64's matched chunk; with the
                completeness error |sum attr - (f(x) - f(0))| / |f(x) - f(0)| (median and max
                over the batch) of both at riemann_middle-64, gausslegendre-16 and -64.
  smoothgrad32  smoothgrad(samples=32, noise=0.2) at chunks 8/16/32 and lipxai's default
                (1 sample at batch 128, 8 at batch 16) vs captum NoiseTunnel(Saliency),
                nt_samples=32, stdevs=0.2, nt_samples_batch_size = lipxai's default chunk
                (same memory), 16, and unbounded.
  boundary_pgd  lipxai.boundary.search(method="pgd"), defaults (L2, 20 radii, 20 steps per
                radius, step size 2.5, 6 radius bisections, 30 refinement halvings), whole
                batch and batch_size=16, vs _torch_reference.TorchPGDLadder (Captum has none)
                on the first --boundary-batch (default 32) images (torch takes minutes on 128).
over_steps_x_one_backward: each library's IG-64, GL-16 and SmoothGrad-32 time over (gradient
evaluations per image) x its own saliency time. ratio = lipxai default / Captum at matched
memory (< 1: lipxai faster); best_ratio = fastest lipxai / fastest Captum variant. Saliency, ig64
and smoothgrad32 also time lipxai's default under lipxai.explain.jit ('*_xla_options': opt-in
XLA CPU options, see lipxai.explain.CPU_COMPILER_OPTIONS): ratio_xla_options, not in best_ratio.
Other processes skew the timings: check load_average_1min. Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout's lipxai
from lipxai import boundary
from lipxai import explain as ex
from lipxai.explain.gradients import DEFAULT_CHUNK, default_chunk

from _common import batch_and_repeats, cnn, compile_jax, interleaved, max_rel_diff, sig  # noqa: E402
from _common import timing_parser, versions  # noqa: E402
from _torch_reference import LR, SEED, TRAIN_BATCH, Reference, TorchPGDLadder  # noqa: E402
from _torch_reference import import_peers, log, nhwc, torch_device  # noqa: E402

IG_STEPS, SG_SAMPLES, SG_NOISE, GL_STEPS = 64, 32, 0.2, 16
IG_CHUNKS, SG_CHUNKS, BOUNDARY_CHUNKS = (8, 16, 32, 64), (8, 16, 32), (None, 16)
SECTIONS = ("saliency", "ig64", "smoothgrad32", "boundary_pgd")
XLA_SUFFIX = "_xla_options"  # variants compiled with lipxai.explain.jit
SALIENCY_REPEATS = 10  # x --repeats: a saliency call is ~50x shorter than the others


def completeness(attr, f_x, f_0):
    """Per-example |sum attr - (f_t(x) - f_t(0))| / |f_t(x) - f_t(0)|: median and max."""
    attr = np.asarray(attr, np.float64)
    gap = np.asarray(f_x, np.float64) - np.asarray(f_0, np.float64)
    err = np.abs(attr.reshape(len(gap), -1).sum(1) - gap) / np.maximum(np.abs(gap), 1e-12)
    return {"median": sig(np.median(err)), "max": sig(err.max())}


def summarise(times, batch, lipxai_default, captum_matched, extra=None):
    per_image = {name: t / batch for name, t in times.items()}
    lipxai = {k: v for k, v in per_image.items()
              if k.startswith("lipxai") and not k.endswith(XLA_SUFFIX)}
    captum = {k: v for k, v in per_image.items() if k.startswith("captum")}
    best_l, best_c = min(lipxai, key=lipxai.get), min(captum, key=captum.get)
    out = {
        "lipxai_s_per_image": round(per_image[lipxai_default], 6),
        "captum_s_per_image": round(per_image[captum_matched], 6),
        "ratio": round(per_image[lipxai_default] / per_image[captum_matched], 3),
        "lipxai_default": lipxai_default, "captum_matched": captum_matched,
        "lipxai_best": best_l, "captum_best": best_c,
        "best_ratio": round(lipxai[best_l] / captum[best_c], 3),
        "s_per_image": {k: round(v, 6) for k, v in per_image.items()},
    }
    xla = lipxai_default + XLA_SUFFIX
    if xla in per_image:
        out["ratio_xla_options"] = round(per_image[xla] / per_image[captum_matched], 3)
    return {**out, **(extra or {})}


def over_steps_x_one_backward(methods):
    """Time of IG-64, Gauss-Legendre-16 and SmoothGrad-32 over (gradient evaluations per image)
    x (the same library's saliency time, one backward pass): below 1 when batching the steps
    or samples beats calling the gradient once per step."""
    sal = methods.get("saliency")
    out = {}
    for name, evaluations in (("ig64", IG_STEPS), ("ig_gl16", GL_STEPS),
                              ("smoothgrad32", SG_SAMPLES)):
        m = methods.get(name)
        if sal is None or m is None:
            continue
        out[name] = {"gradient_evaluations_per_image": evaluations,
                     "lipxai": round(m["lipxai_s_per_image"]
                                     / (evaluations * sal["lipxai_s_per_image"]), 3)}
        if name != "ig_gl16":  # Captum's timing there is its riemann_middle-64 (ig64's)
            out[name]["captum"] = round(m["captum_s_per_image"]
                                        / (evaluations * sal["captum_s_per_image"]), 3)
    return out


def on_cnn(function, /, **fixed):
    """A maker of ``(params, x, target) -> function(cnn(params, .), x, target, **fixed, **kw)``,
    the form :func:`compile_jax` compiles with the weights as arguments."""
    return lambda **kw: (lambda p, x, t: function(lambda z: cnn(p, z), x, t, **fixed, **kw))


def sweep(chunks, default):
    """Variants for the chunk sizes ``chunks`` and lipxai's default (batch_size=None)."""
    return [(f"lipxai_chunk{c}", {"batch_size": None if c == default else c})
            for c in sorted({*chunks, default})]


class Lipxai:
    """lipxai variants compiled on the reference's weights, inputs and targets (compile_s kept)."""

    def __init__(self, ref):
        self.ref, self.compile_s = ref, {}

    def variants(self, method, make, names_and_kwargs, jit=jax.jit, x=None, target=None):
        x = self.ref.x if x is None else x
        target, out = self.ref.target if target is None else target, {}
        for name, kwargs in names_and_kwargs:
            out[name], self.compile_s[f"{method}/{name}"] = compile_jax(
                make(**kwargs), self.ref.params, x, target, jit=jit)
        return out

    def xla_variant(self, method, make, default_name, kwargs):
        """lipxai's default compiled with lipxai.explain.jit (opt-in XLA CPU options)."""
        return self.variants(method, make, [(f"{default_name}{XLA_SUFFIX}", kwargs)], ex.jit)


def bench_saliency(ref, lx, captum_attr, repeats):
    make = on_cnn(ex.saliency)
    sal = captum_attr.Saliency(ref.model)
    variants = {**lx.variants("saliency", make, [("lipxai", {})]),
                **lx.xla_variant("saliency", make, "lipxai", {})}
    variants["captum"] = ref.synced(lambda: sal.attribute(
        ref.x_t.clone().requires_grad_(True), target=ref.target_t, abs=False))
    log("saliency")
    times, last = interleaved(variants, SALIENCY_REPEATS * repeats, warmup=["captum"])
    return {"saliency": summarise(times, ref.batch, "lipxai", "captum", {
        "repeats": SALIENCY_REPEATS * repeats,
        "max_rel_diff_lipxai_vs_captum": sig(max_rel_diff(last["lipxai"], nhwc(last["captum"])))})}


def bench_ig(ref, lx, captum_attr, repeats, notes):
    """IG-64 (riemann_middle) chunk sweep and lipxai GL-16, in one interleaved group."""
    torch, x_t, batch = ref.torch, ref.x_t, ref.batch
    make_ig = on_cnn(ex.integrated_gradients, steps=IG_STEPS, method="riemann_middle")
    make_gl = on_cnn(ex.integrated_gradients, steps=GL_STEPS, method="gausslegendre")
    ig = captum_attr.IntegratedGradients(ref.model)

    def captum_ig(steps, method, chunk_steps):
        return ref.synced(lambda: ig.attribute(
            x_t, baselines=torch.zeros_like(x_t), target=ref.target_t, n_steps=steps, method=method,
            internal_batch_size=None if chunk_steps is None else chunk_steps * batch))

    ig_chunk, gl_chunk = default_chunk(IG_STEPS, ref.x.shape), default_chunk(GL_STEPS, ref.x.shape)
    gl_name, matched = f"lipxai_gausslegendre{GL_STEPS}", f"captum_internal_batch_{ig_chunk}x{batch}"
    variants = {**lx.variants("ig64", make_ig, sweep(IG_CHUNKS, ig_chunk)),
                **lx.xla_variant("ig64", make_ig, f"lipxai_chunk{ig_chunk}", {"batch_size": None}),
                **lx.variants("ig_gl16", make_gl, [(gl_name, {"batch_size": None})])}
    for c in sorted({ig_chunk, DEFAULT_CHUNK}):
        variants[f"captum_internal_batch_{c}x{batch}"] = captum_ig(IG_STEPS, "riemann_middle", c)
    variants["captum_unbounded"] = captum_ig(IG_STEPS, "riemann_middle", None)
    log(f"ig64 + ig_gl16: completeness, then {len(variants)} variants")
    rm64, gl16, gl64 = f"riemann_middle{IG_STEPS}", f"gausslegendre{GL_STEPS}", f"gausslegendre{IG_STEPS}"
    gl64_fn = on_cnn(ex.integrated_gradients, steps=IG_STEPS, method="gausslegendre")(batch_size=None)
    attr = {  # untimed; the Captum calls also warm up the matched variant
        f"lipxai_{rm64}": variants[f"lipxai_chunk{ig_chunk}"](),
        f"captum_{rm64}": nhwc(variants[matched]()),
        f"lipxai_{gl16}": variants[gl_name](),
        f"captum_{gl16}": nhwc(captum_ig(GL_STEPS, "gausslegendre", gl_chunk)()),
        f"lipxai_{gl64}": jax.jit(gl64_fn)(ref.params, ref.x, ref.target),
        f"captum_{gl64}": nhwc(captum_ig(IG_STEPS, "gausslegendre", ig_chunk)()),
    }
    with torch.no_grad():
        f0_t = ref.model(torch.zeros_like(x_t)).cpu().numpy()
    pick = lambda logits: np.take_along_axis(np.asarray(logits), ref.target_np[:, None], 1)[:, 0]
    ends = {"lipxai": (pick(ref.logits_j), pick(cnn(ref.params, jnp.zeros_like(ref.x)))),
            "captum": (pick(ref.logits_t), pick(f0_t))}
    errors = {name: completeness(a, *ends[name.split("_")[0]]) for name, a in attr.items()}
    times, _ = interleaved(variants, repeats, warmup=[k for k in variants if k.startswith("captum")
                                                      and k != matched])  # matched: above
    methods = {"ig64": summarise(
        {k: v for k, v in times.items() if k != gl_name}, batch, f"lipxai_chunk{ig_chunk}", matched,
        {"steps": IG_STEPS, "quadrature": "riemann_middle", "baseline": "zeros",
         "lipxai_default_chunk_steps": ig_chunk,
         "max_rel_diff_lipxai_vs_captum": sig(max_rel_diff(attr[f"lipxai_{rm64}"],
                                                           attr[f"captum_{rm64}"])),
         "completeness_error": {"lipxai": errors[f"lipxai_{rm64}"],
                                "captum": errors[f"captum_{rm64}"]}})}
    methods["ig_gl16"] = summarise(
        {k: times[k] for k in (gl_name, matched, "captum_unbounded")}, batch, gl_name, matched,
        {"compares": f"lipxai gausslegendre-{GL_STEPS} with Captum riemann_middle-{IG_STEPS} "
                     "(the same Captum timings as ig64; Captum's gausslegendre-64 evaluates as "
                     "many gradients)",
         "gradient_evaluations_per_image": {"lipxai": GL_STEPS, "captum": IG_STEPS},
         "completeness_error": errors})
    gl_err, rm_err = errors[f"lipxai_{gl16}"]["median"], errors[f"captum_{rm64}"]["median"]
    notes.append(f"ig_gl16: lipxai gausslegendre-{GL_STEPS} evaluates {IG_STEPS // GL_STEPS}x fewer "
                 f"gradients than Captum riemann_middle-{IG_STEPS}; its median completeness error "
                 f"is {gl_err:.3g} vs {rm_err:.3g} ({'at most' if gl_err <= rm_err else 'above'} "
                 "Captum's; ReLU and max-pool make the path integrand piecewise linear, where "
                 "Gauss-Legendre's order does not help).")
    return methods


def bench_smoothgrad(ref, lx, captum_attr, repeats):
    make = on_cnn(ex.smoothgrad, key=jax.random.key(SEED), samples=SG_SAMPLES, noise=SG_NOISE)
    nt = captum_attr.NoiseTunnel(captum_attr.Saliency(ref.model))

    def captum_sg(chunk):
        return ref.synced(lambda: nt.attribute(
            ref.x_t, nt_type="smoothgrad", nt_samples=SG_SAMPLES, nt_samples_batch_size=chunk,
            stdevs=SG_NOISE, target=ref.target_t, abs=False))

    sg_chunk = default_chunk(SG_SAMPLES, ref.x.shape)
    variants = {**lx.variants("smoothgrad32", make, sweep(SG_CHUNKS, sg_chunk)),
                **lx.xla_variant("smoothgrad32", make, f"lipxai_chunk{sg_chunk}", {"batch_size": None})}
    for c in sorted({sg_chunk, DEFAULT_CHUNK}):
        variants[f"captum_nt_samples_batch_{c}"] = captum_sg(c)
    variants["captum_unbounded"] = captum_sg(None)
    log("smoothgrad32")
    times, _ = interleaved(variants, repeats, warmup=[k for k in variants if k.startswith("captum")])
    return {"smoothgrad32": summarise(
        times, ref.batch, f"lipxai_chunk{sg_chunk}", f"captum_nt_samples_batch_{sg_chunk}",
        {"samples": SG_SAMPLES, "noise": SG_NOISE, "lipxai_default_chunk_samples": sg_chunk,
         "noise_drawn_inside_timed_call": True})}


def bench_boundary(ref, lx, repeats, nb, notes):
    """PGD ladder boundary search on the first ``nb`` images, against TorchPGDLadder."""
    xb_t, tb_t = ref.x_t[:nb], ref.target_t[:nb]
    names = [("lipxai_whole_batch" if c is None else f"lipxai_batch_size{c}", {"batch_size": c})
             for c in BOUNDARY_CHUNKS if c is None or c < nb]
    variants = lx.variants("boundary_pgd", on_cnn(boundary.search, method="pgd"), names,
                           x=ref.x[:nb], target=ref.target[:nb])
    ladder = TorchPGDLadder(ref.torch, ref.model)
    variants["captum_torch_reference"] = ref.synced(lambda: ladder(xb_t, tb_t))
    log(f"boundary_pgd on {nb} images")
    times, last = interleaved(variants, repeats)  # torch's warm-up: the median drops it
    result, (_, dist_t, success_t) = last["lipxai_whole_batch"], last["captum_torch_reference"]
    dist_j, dist_t = np.asarray(result.distances), dist_t.cpu().numpy()
    both = np.asarray(result.success) & success_t.cpu().numpy()
    close = np.abs(dist_j - dist_t) <= 1e-2 * np.maximum(dist_t, 1e-6)
    notes.append("boundary_pgd: Captum has no boundary search; 'captum_*' there is "
                 "TorchPGDLadder, a line-by-line torch port of lipxai.boundary's PGD ladder "
                 "(same radii, steps, step size, early stop, radius bisection and refinement); "
                 f"it runs on the first {nb} images (--boundary-batch) to bound the run time.")
    notes.append("lipxai chunk / batch_size variants are compiled separately; 'ratio' compares "
                 "lipxai's default with Captum at the same chunk memory, 'best_ratio' the "
                 "fastest variant of each.")
    return {"boundary_pgd": summarise(times, nb, "lipxai_whole_batch", "captum_torch_reference", {
        "images": nb, "norm": "l2", "num_eps": ladder.num_eps, "steps_per_radius": ladder.steps,
        "step_size": ladder.step_size, "eps_bisect": ladder.eps_bisect,
        "refine_steps": ladder.refine_steps, "ladder_radii_run": ladder.levels_run,
        "gradient_evaluations_per_image": ladder.steps * (ladder.levels_run + ladder.eps_bisect),
        "success_rate": {"lipxai": float(np.mean(result.success)),
                         "torch": float(success_t.float().mean())},
        "median_distance": {"lipxai": sig(np.median(dist_j), 4), "torch": sig(np.median(dist_t), 4)},
        "fraction_same_distance_1pct": float(np.mean(close[both])) if both.any() else None})}


def main():
    parser = timing_parser(__doc__, batch=128, repeats=5)
    parser.add_argument("--boundary-batch", type=int, default=32,
                        help="images of the boundary search (at most --batch; default 32)")
    parser.add_argument("--train-steps", type=int, default=100,
                        help="Adam steps on MNIST train before explaining (0: untrained weights)")
    parser.add_argument("--methods", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)} (default all; "
                             "ig64 includes ig_gl16)")
    parser.add_argument("--torch-device", default="auto",
                        help="torch device for Captum (default auto: cuda when JAX runs on a "
                             "GPU and torch sees one, else cpu)")
    args = parser.parse_args()
    batch, repeats = batch_and_repeats(args)
    selected = args.methods.split(",")
    if not selected or not set(selected) <= set(SECTIONS):
        parser.error(f"--methods must be a comma-separated subset of {','.join(SECTIONS)}")
    if min(batch, repeats, args.boundary_batch) < 1 or args.train_steps < 0:
        parser.error("--batch, --repeats and --boundary-batch must be >= 1, --train-steps >= 0")
    torch, captum_attr = import_peers("torch", "captum.attr")
    torch.set_num_threads(os.cpu_count())
    load_at_start = os.getloadavg()[0]
    device = torch_device(torch, args.torch_device)
    ref = Reference(torch, batch, args.train_steps, device)
    if jax.default_backend() == "gpu":
        jax.config.update("jax_default_matmul_precision", "highest")

    lx, methods, notes = Lipxai(ref), {}, []
    if "saliency" in selected:
        methods.update(bench_saliency(ref, lx, captum_attr, repeats))
    if "ig64" in selected:
        methods.update(bench_ig(ref, lx, captum_attr, repeats, notes))
    if "smoothgrad32" in selected:
        methods.update(bench_smoothgrad(ref, lx, captum_attr, repeats))
    if "boundary_pgd" in selected:
        methods.update(bench_boundary(ref, lx, repeats, min(args.boundary_batch, batch), notes))
    if args.train_steps == 0:
        notes.append("weights are untrained (torch default init, seed 0)")

    print(json.dumps({
        "benchmark": "attributions",
        "model": "conv32-relu-maxpool-conv64-relu-maxpool-dense128-relu-dense10 (3x3, padding 1)",
        "weights": ("untrained: torch default init, seed 0" if args.train_steps == 0 else
                    f"torch default init (seed 0) + {args.train_steps} Adam steps (lr {LR}, "
                    f"batch {TRAIN_BATCH}) of cross-entropy on MNIST train"),
        "train_s": round(ref.train_s, 2), "batch_accuracy": float(np.mean(ref.target_np == ref.labels)),
        "data": f"mnist/test[:{batch}], preprocess to [0, 1]", "targets": "predicted classes",
        "batch": batch, "dtype": "float32", "quick": args.quick, "repeats": repeats,
        "statistic": "median seconds per image (call time / batch)",
        "max_abs_logit_diff_jax_vs_torch": sig(ref.logit_diff),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch_device": str(device),
        "load_average_1min": {"start": load_at_start, "end": os.getloadavg()[0]},
        "jax_backend": jax.default_backend(), "jax_device": jax.devices()[0].device_kind,
        "versions": versions("jax", "jaxlib", "flax", "numpy", "torch", "captum"),
        "lipxai_compile_s": {k: round(v, 2) for k, v in lx.compile_s.items()},
        "methods": methods,
        "summary": {name: {k: m[k] for k in ("lipxai_s_per_image", "captum_s_per_image", "ratio",
                                             "ratio_xla_options") if k in m}
                    for name, m in methods.items()},
        "over_steps_x_one_backward": over_steps_x_one_backward(methods),
        "notes": notes,
    }, indent=2))


if __name__ == "__main__":
    main()
