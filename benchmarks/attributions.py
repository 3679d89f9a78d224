"""Seconds per image of saliency, IG-64, SmoothGrad-32 and PGD boundary search: lipxai vs Captum.

    TFDS_DATA_DIR=/path/to/tfds python benchmarks/attributions.py [--quick] [--batch N]
        [--repeats N] [--boundary-batch N] [--train-steps N]

The model is the plain (unconstrained) conv32-conv64-dense128 CNN: [conv3x3 (padding 1) -> ReLU
-> max-pool 2x2] x (32, 64) -> flatten -> dense128 -> ReLU -> dense10 on 28x28x1 inputs,
float32. It is built in torch (default init, seed 0), trained for --train-steps Adam steps on
MNIST train (default 100; 0: untrained), and its weights are ported to a JAX function (NHWC,
HWIO kernels, dense rows permuted to torch's NCHW flatten order); the logits of both must agree
to 1e-4 before anything is timed. The JAX function is written with lipxai.nn.max_pool: the
same function as flax.linen.max_pool (same output and gradient, which goes to the first maximum
of each window, as torch's MaxPool2d), differentiated without XLA's select_and_scatter_add,
which is slow on CPU. Inputs are the first --batch (default 128; --quick: 16) real MNIST test
images (lipxai.data.load_split + preprocess); the script never uses random data and exits 1
without them. Targets are the predicted classes.

Each lipxai function is jax.jit-ed with the weights as arguments (a closure over them would let
XLA constant-fold them), compiled and warmed up before timing, and blocked with
jax.block_until_ready. Captum runs on torch CPU with torch.set_num_threads(os.cpu_count()), or on
CUDA when JAX runs on a GPU (--torch-device; timed calls then end with torch.cuda.synchronize;
TF32 is off on both sides, as the logits must agree to 1e-4),
warmed up by one untimed call (the boundary reference: its first repeat, which the median
drops). Within a method every variant (lipxai chunk sizes, Captum settings) is called once per
repeat in turn, so the --repeats (default 5; --quick: 2; saliency, whose calls are ~50x
shorter: 10 x --repeats) interleave; medians are reported, in seconds per image (call time /
images).
  saliency      lipxai.explain.saliency vs captum Saliency(abs=False).
  ig64          integrated_gradients(steps=64, riemann_middle, zero baseline) at chunk sizes
                8/16/32/64 steps and at lipxai's default (batch_size=None; default_chunk: 1
                step at batch 128, 10 at batch 16) vs captum IntegratedGradients(n_steps=64,
                riemann_middle) with internal_batch_size = lipxai's default chunk x batch
                (same memory), 16 steps x batch, and unbounded (Captum's default).
  ig_gl16       lipxai gausslegendre with 16 steps (default chunk), timed in the
                ig64 group (a quarter of the gradients), vs Captum riemann_middle-64 at
                ig64's matched chunk; with the completeness error
                |sum attr - (f(x) - f(0))| / |f(x) - f(0)| (median and max over the batch) of
                both libraries at riemann_middle-64, gausslegendre-16 and gausslegendre-64.
  smoothgrad32  smoothgrad(samples=32, noise=0.2) at chunks 8/16/32 and lipxai's default
                (1 sample at batch 128, 8 at batch 16) vs captum NoiseTunnel(Saliency) with
                nt_samples=32, stdevs=0.2, nt_samples_batch_size = lipxai's default chunk
                (same memory), 16, and unbounded.
  boundary_pgd  lipxai.boundary.search(method="pgd") with its defaults (L2, 20 radii, 20 steps
                per radius, step size 2.5, 6 radius bisections, 30 refinement halvings), whole
                batch and batch_size=16 chunks, vs a line-by-line torch port of the same ladder
                (TorchPGDLadder; Captum has none), on the first --boundary-batch (default 32)
                images: the torch reference alone takes minutes per call on 128 images.
over_steps_x_one_backward: each library's IG-64, GL-16 and SmoothGrad-32 time over (gradient
evaluations per image) x its own saliency time (one backward pass); absolute throughput is
1 / s_per_image.
ratio = lipxai default / Captum at matched memory (< 1: lipxai faster); best_ratio = fastest
lipxai variant / fastest Captum variant. Saliency, ig64 and smoothgrad32 also time lipxai's
default compiled with lipxai.explain.jit instead of jax.jit ('*_xla_options': opt-in XLA CPU
compile options, YNNPACK fusions off; see lipxai.explain.CPU_COMPILER_OPTIONS), reported as
ratio_xla_options and left out of best_ratio. Other processes on the machine skew the timings:
check load_average_1min. Prints one JSON object (progress goes to stderr).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout's lipxai
from lipxai import boundary, data
from lipxai import explain as ex
from lipxai.explain.gradients import DEFAULT_CHUNK, default_chunk

from _common import cnn as jax_cnn  # noqa: E402  (the max-pool is lipxai.nn.max_pool)
from _common import batch_and_repeats, compile_jax, interleaved, timing_parser, versions  # noqa: E402
from _common import mnist_test_images  # noqa: E402

SEED, CLASSES, LR, TRAIN_BATCH = 0, 10, 1e-3, 128
IG_STEPS, SG_SAMPLES, SG_NOISE, GL_STEPS = 64, 32, 0.2, 16
IG_CHUNKS, SG_CHUNKS, BOUNDARY_CHUNKS = (8, 16, 32, 64), (8, 16, 32), (None, 16)
LOGIT_ATOL = 1e-4
SECTIONS = ("saliency", "ig64", "smoothgrad32", "boundary_pgd")
XLA_SUFFIX = "_xla_options"  # variants compiled with lipxai.explain.jit
SALIENCY_REPEATS = 10  # x --repeats: a saliency call is ~50x shorter than the others
PEERS_MESSAGE = ("this benchmark needs torch and captum: install the peers extra "
                 "(pip install torch==2.13.0 && pip install -e '.[peers]')")


def import_peers():
    try:
        import torch
        from captum import attr as captum_attr
    except ImportError as error:
        raise SystemExit(f"{PEERS_MESSAGE} ({error})") from None
    return torch, captum_attr


# model: torch, and the same weights as a JAX function


def torch_cnn(torch):
    nn = torch.nn
    torch.manual_seed(SEED)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),  # NCHW order: (C, H, W)
        nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, CLASSES),
    )


def torch_device(torch, name):
    """``--torch-device``: "auto" is CUDA when JAX runs on a GPU and torch sees one, else CPU."""
    if name == "auto":
        name = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
    return torch.device(name)


def synced(torch, device, call):
    """``call`` followed by a CUDA synchronisation when torch runs on a GPU (for timing)."""
    if device.type != "cuda":
        return call

    def wrapped():
        out = call()
        torch.cuda.synchronize(device)
        return out
    return wrapped


def nchw(torch, x):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def nhwc(t):
    return t.detach().cpu().numpy().transpose(0, 2, 3, 1)


def train_torch(torch, model, steps):
    """``steps`` Adam steps of cross-entropy on shuffled MNIST train batches; returns seconds."""
    if steps == 0:
        return 0.0
    images, labels = data.load_split("mnist", "train")
    rng = np.random.default_rng(SEED)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    start = time.perf_counter()
    model.train()
    for _ in range(steps):
        idx = rng.integers(0, len(labels), TRAIN_BATCH)
        x = nchw(torch, data.preprocess(images[idx]))
        y = torch.from_numpy(labels[idx]).long()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()
    return time.perf_counter() - start


def trained_torch_cnn(torch, steps):
    """:func:`torch_cnn` after :func:`train_torch`, in eval mode with frozen weights
    (explanations need input gradients only); returns (model, training seconds)."""
    model = torch_cnn(torch)
    log(f"training {steps} steps")
    seconds = train_torch(torch, model, steps)
    model = model.float().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, seconds


def port_weights(model):
    """Torch weights -> JAX params for :func:`jax_cnn` (HWIO kernels, dense rows in NHWC order)."""
    conv1, conv2, dense1, dense2 = model[0], model[3], model[7], model[9]
    npy = lambda p: p.detach().numpy().astype(np.float32)
    hwio = lambda w: np.ascontiguousarray(npy(w).transpose(2, 3, 1, 0))
    # torch flattens (C=64, H=7, W=7); the JAX function flattens (H, W, C)
    w1 = npy(dense1.weight).reshape(128, 64, 7, 7).transpose(2, 3, 1, 0).reshape(7 * 7 * 64, 128)
    params = {
        "conv1": (hwio(conv1.weight), npy(conv1.bias)),
        "conv2": (hwio(conv2.weight), npy(conv2.bias)),
        "dense1": (np.ascontiguousarray(w1), npy(dense1.bias)),
        "dense2": (np.ascontiguousarray(npy(dense2.weight).T), npy(dense2.bias)),
    }
    return jax.tree_util.tree_map(jnp.asarray, params)


# torch reference of lipxai.boundary.search(method="pgd", norm="l2")


class TorchPGDLadder:
    """lipxai.boundary._pgd + _refine (L2) transcribed to torch, same defaults and ladder.

    For each radius of the ladder (while some example has not crossed): ``steps`` PGD steps on
    the margin within the L2 ball, step ``step_size * eps / steps`` along the normalised
    gradient; then ``eps_bisect`` bisections of the radius between the last radius that failed
    and the first that crossed (a PGD run each); then ``refine_steps`` halvings of the segment
    from x to the point found, keeping the far end at m <= -0.01 tol.
    """

    TINY, SAFETY = 1e-12, 0.01

    def __init__(self, torch, model, num_eps=20, steps=20, step_size=2.5, eps_bisect=6,
                 refine_steps=30, tol=1e-3):
        self.torch, self.model = torch, model
        self.steps, self.step_size, self.eps_bisect = steps, step_size, eps_bisect
        self.refine_steps, self.tol, self.num_eps = refine_steps, tol, num_eps

    def margin(self, x, target):
        logits = self.model(x)
        own = logits.gather(1, target[:, None])[:, 0]
        mask = self.torch.nn.functional.one_hot(target, logits.shape[1]).bool()
        return own - logits.masked_fill(mask, -math.inf).amax(1)

    @staticmethod
    def bc(v):
        return v.view(-1, 1, 1, 1)

    def norm(self, d):
        return d.flatten(1).norm(dim=1)

    def attack(self, x, target, eps):
        torch = self.torch
        alpha = self.bc(self.step_size * eps / self.steps)
        xa = x
        for _ in range(self.steps):
            xa = xa.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.margin(xa, target).sum(), xa)
            direction = g / self.bc(self.norm(g).clamp_min(self.TINY))
            delta = xa.detach() - alpha * direction - x
            delta = delta * self.bc(torch.clamp(eps / self.norm(delta).clamp_min(self.TINY), max=1.0))
            xa = x + delta
        return xa.detach()

    def __call__(self, x, target):
        torch = self.torch
        b = x.shape[0]
        eps_max = math.sqrt(math.prod(x.shape[1:]))
        ladder = torch.from_numpy(np.geomspace(eps_max / 1000.0, eps_max, self.num_eps)).to(
            x.device, x.dtype)
        with torch.no_grad():
            m0 = self.margin(x, target)
        done, found = m0 <= 0, x.clone()
        level = torch.full((b,), -1, dtype=torch.long, device=x.device)
        k = 0
        while k < self.num_eps and not bool(done.all()):
            xa = self.attack(x, target, ladder[k].expand(b))
            with torch.no_grad():
                new = ~done & (self.margin(xa, target) <= 0)
            found = torch.where(self.bc(new), xa, found)
            level = torch.where(new, torch.full_like(level, k), level)
            done, k = done | new, k + 1
        self.levels_run = k
        active = done & (level >= 0)
        hi = ladder[level.clamp(min=0)]
        lo = torch.where(level > 0, ladder[(level - 1).clamp(min=0)], torch.zeros_like(hi))
        for _ in range(self.eps_bisect):
            mid = 0.5 * (lo + hi)
            xa = self.attack(x, target, mid)
            with torch.no_grad():
                crossed = active & (self.margin(xa, target) <= 0)
            found = torch.where(self.bc(crossed), xa, found)
            lo, hi = torch.where(crossed, lo, mid), torch.where(crossed, mid, hi)
        with torch.no_grad():  # _refine
            d = found - x
            lo, hi = torch.zeros_like(m0), torch.ones_like(m0)
            for _ in range(self.refine_steps):
                mid = 0.5 * (lo + hi)
                over = self.margin(x + self.bc(mid) * d, target) <= -self.SAFETY * self.tol
                lo, hi = torch.where(over, lo, mid), torch.where(over, mid, hi)
            points = torch.where(self.bc(hi >= 1.0), found, x + self.bc(hi) * d)
            points = torch.where(self.bc(m0 <= 0), x, points)
            m = self.margin(points, target)
            success = (m <= 0) & ((m >= -self.tol) | (m0 <= 0))
            return points, self.norm(points - x), success


# timing


def log(message):
    print(f"[attributions {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def sig(value, digits=3):
    return float(f"{value:.{digits}g}")


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


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
    torch, captum_attr = import_peers()
    threads = os.cpu_count()
    torch.set_num_threads(threads)
    load_at_start = os.getloadavg()[0]

    x_np, labels = mnist_test_images(batch)
    model, train_s = trained_torch_cnn(torch, args.train_steps)
    params = port_weights(model)
    device = torch_device(torch, args.torch_device)
    model = model.to(device)
    if device.type == "cuda":  # full float32 on both sides: no TF32 convolutions or matmuls
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    if jax.default_backend() == "gpu":
        jax.config.update("jax_default_matmul_precision", "highest")

    x_t = nchw(torch, x_np).to(device)
    x = jnp.asarray(x_np)
    with torch.no_grad():
        logits_t = model(x_t).cpu().numpy()
    logits_j = np.asarray(jax.jit(jax_cnn)(params, x))
    logit_diff = float(np.abs(logits_j - logits_t).max())
    if logit_diff > LOGIT_ATOL * max(1.0, float(np.abs(logits_t).max())):
        raise SystemExit(f"ported JAX model disagrees with torch: max |logit diff| {logit_diff}")
    target_np = logits_t.argmax(1).astype(np.int32)
    target, target_t = jnp.asarray(target_np), torch.from_numpy(target_np).long().to(device)
    with torch.no_grad():
        f0_t = model(torch.zeros_like(x_t)).cpu().numpy()
    pick = lambda logits: np.take_along_axis(np.asarray(logits), target_np[:, None], 1)[:, 0]
    f_x, f_0 = pick(logits_j), pick(np.asarray(jax_cnn(params, jnp.zeros_like(x))))
    f_x_t, f_0_t = pick(logits_t), pick(f0_t)

    methods, compile_s, notes = {}, {}, []

    def lipxai_variants(method, make, names_and_kwargs, jit=jax.jit):
        variants = {}
        for name, kwargs in names_and_kwargs:
            call, compile_s[f"{method}/{name}"] = compile_jax(make(**kwargs), params, x, target,
                                                              jit=jit)
            variants[name] = call
        return variants

    def xla_variant(method, make, default_name, kwargs):
        """lipxai's default compiled with lipxai.explain.jit (opt-in XLA CPU options)."""
        return lipxai_variants(method, make, [(f"{default_name}{XLA_SUFFIX}", kwargs)], ex.jit)

    def sweep(chunks, default):
        """Variants for the chunk sizes ``chunks`` and lipxai's default (batch_size=None)."""
        return [(f"lipxai_chunk{c}", {"chunk": None if c == default else c})
                for c in sorted({*chunks, default})]

    if "saliency" in selected:
        # saliency
        def make_saliency():
            return lambda p, x, t: ex.saliency(lambda z: jax_cnn(p, z), x, t)

        sal = captum_attr.Saliency(model)
        variants = lipxai_variants("saliency", make_saliency, [("lipxai", {})])
        variants.update(xla_variant("saliency", make_saliency, "lipxai", {}))
        variants["captum"] = synced(torch, device, lambda: sal.attribute(
            x_t.clone().requires_grad_(True), target=target_t, abs=False))
        log("saliency")
        times, last = interleaved(variants, SALIENCY_REPEATS * repeats, warmup=["captum"])
        methods["saliency"] = summarise(times, batch, "lipxai", "captum", {
            "repeats": SALIENCY_REPEATS * repeats,
            "max_rel_diff_lipxai_vs_captum": sig(rel_err(last["lipxai"], nhwc(last["captum"])))})

    if "ig64" in selected:
        # IG-64 (riemann_middle) chunk sweep and lipxai GL-16, in one interleaved group
        def make_ig(chunk, steps=IG_STEPS, method="riemann_middle"):
            return lambda p, x, t: ex.integrated_gradients(
                lambda z: jax_cnn(p, z), x, t, steps=steps, method=method, batch_size=chunk)

        ig = captum_attr.IntegratedGradients(model)

        def captum_ig(steps, method, chunk_steps):
            return synced(torch, device, lambda: ig.attribute(
                x_t, baselines=torch.zeros_like(x_t), target=target_t, n_steps=steps, method=method,
                internal_batch_size=None if chunk_steps is None else chunk_steps * batch))

        ig_chunk, gl_chunk = default_chunk(IG_STEPS, x.shape), default_chunk(GL_STEPS, x.shape)
        gl_name, matched = f"lipxai_gausslegendre{GL_STEPS}", f"captum_internal_batch_{ig_chunk}x{batch}"
        variants = lipxai_variants("ig64", make_ig, sweep(IG_CHUNKS, ig_chunk))
        variants.update(xla_variant("ig64", make_ig, f"lipxai_chunk{ig_chunk}", {"chunk": None}))
        variants.update(lipxai_variants(
            "ig_gl16", lambda: make_ig(None, GL_STEPS, "gausslegendre"), [(gl_name, {})]))
        for c in sorted({ig_chunk, DEFAULT_CHUNK}):
            variants[f"captum_internal_batch_{c}x{batch}"] = captum_ig(IG_STEPS, "riemann_middle", c)
        variants["captum_unbounded"] = captum_ig(IG_STEPS, "riemann_middle", None)
        log(f"ig64 + ig_gl16: completeness, then {len(variants)} variants")
        rm64, gl16, gl64 = (f"riemann_middle{IG_STEPS}", f"gausslegendre{GL_STEPS}",
                            f"gausslegendre{IG_STEPS}")
        attr = {  # untimed; the Captum calls also warm up the matched variant
            f"lipxai_{rm64}": variants[f"lipxai_chunk{ig_chunk}"](),
            f"captum_{rm64}": nhwc(variants[matched]()),
            f"lipxai_{gl16}": variants[gl_name](),
            f"captum_{gl16}": nhwc(captum_ig(GL_STEPS, "gausslegendre", gl_chunk)()),
            f"lipxai_{gl64}": jax.jit(make_ig(None, IG_STEPS, "gausslegendre"))(params, x, target),
            f"captum_{gl64}": nhwc(captum_ig(IG_STEPS, "gausslegendre", ig_chunk)()),
        }
        errors = {name: completeness(a, *((f_x, f_0) if name.startswith("lipxai") else (f_x_t, f_0_t)))
                  for name, a in attr.items()}
        times, _ = interleaved(variants, repeats, warmup=[k for k in variants if k.startswith("captum")
                                                          and k != matched])  # matched: above
        methods["ig64"] = summarise(
            {k: v for k, v in times.items() if k != gl_name}, batch, f"lipxai_chunk{ig_chunk}",
            matched,
            {"steps": IG_STEPS, "quadrature": "riemann_middle", "baseline": "zeros",
             "lipxai_default_chunk_steps": ig_chunk,
             "max_rel_diff_lipxai_vs_captum": sig(rel_err(attr[f"lipxai_{rm64}"], attr[f"captum_{rm64}"])),
             "completeness_error": {"lipxai": errors[f"lipxai_{rm64}"],
                                    "captum": errors[f"captum_{rm64}"]}})
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

    if "smoothgrad32" in selected:
        # SmoothGrad-32, chunk sweep
        key = jax.random.key(SEED)

        def make_sg(chunk):
            return lambda p, x, t: ex.smoothgrad(lambda z: jax_cnn(p, z), x, t, key=key,
                                                 samples=SG_SAMPLES, noise=SG_NOISE, batch_size=chunk)

        nt = captum_attr.NoiseTunnel(captum_attr.Saliency(model))

        def captum_sg(chunk):
            return synced(torch, device, lambda: nt.attribute(
                x_t, nt_type="smoothgrad", nt_samples=SG_SAMPLES, nt_samples_batch_size=chunk,
                stdevs=SG_NOISE, target=target_t, abs=False))

        sg_chunk = default_chunk(SG_SAMPLES, x.shape)
        matched = f"captum_nt_samples_batch_{sg_chunk}"
        variants = lipxai_variants("smoothgrad32", make_sg, sweep(SG_CHUNKS, sg_chunk))
        variants.update(xla_variant("smoothgrad32", make_sg, f"lipxai_chunk{sg_chunk}", {"chunk": None}))
        for c in sorted({sg_chunk, DEFAULT_CHUNK}):
            variants[f"captum_nt_samples_batch_{c}"] = captum_sg(c)
        variants["captum_unbounded"] = captum_sg(None)
        log("smoothgrad32")
        times, _ = interleaved(variants, repeats, warmup=[k for k in variants if k.startswith("captum")])
        methods["smoothgrad32"] = summarise(
            times, batch, f"lipxai_chunk{sg_chunk}", matched,
            {"samples": SG_SAMPLES, "noise": SG_NOISE, "lipxai_default_chunk_samples": sg_chunk,
             "noise_drawn_inside_timed_call": True})

    if "boundary_pgd" in selected:
        # boundary search: PGD ladder, on the first boundary_batch images
        nb = min(args.boundary_batch, batch)
        xb, tb, xb_t, tb_t = x[:nb], target[:nb], x_t[:nb], target_t[:nb]

        def make_pgd(chunk):
            return lambda p, x, t: boundary.search(lambda z: jax_cnn(p, z), x, t, method="pgd",
                                                   batch_size=chunk)

        variants = {}
        for chunk in BOUNDARY_CHUNKS:
            if chunk is None or chunk < nb:
                name = "lipxai_whole_batch" if chunk is None else f"lipxai_batch_size{chunk}"
                variants[name], compile_s[f"boundary_pgd/{name}"] = compile_jax(
                    make_pgd(chunk), params, xb, tb)
        reference = TorchPGDLadder(torch, model)
        variants["captum_torch_reference"] = synced(torch, device, lambda: reference(xb_t, tb_t))
        log(f"boundary_pgd on {nb} images")
        times, last = interleaved(variants, repeats)  # torch's warm-up: the median drops it
        result, (_, dist_t, success_t) = last["lipxai_whole_batch"], last["captum_torch_reference"]
        dist_j, dist_t = np.asarray(result.distances), dist_t.cpu().numpy()
        both = np.asarray(result.success) & success_t.cpu().numpy()
        close = np.abs(dist_j - dist_t) <= 1e-2 * np.maximum(dist_t, 1e-6)
        methods["boundary_pgd"] = summarise(
            times, nb, "lipxai_whole_batch", "captum_torch_reference", {
                "images": nb, "norm": "l2", "num_eps": reference.num_eps,
                "steps_per_radius": reference.steps, "step_size": reference.step_size,
                "eps_bisect": reference.eps_bisect, "refine_steps": reference.refine_steps,
                "ladder_radii_run": reference.levels_run,
                "gradient_evaluations_per_image": reference.steps * (reference.levels_run
                                                                     + reference.eps_bisect),
                "success_rate": {"lipxai": float(np.mean(result.success)),
                                 "torch": float(success_t.float().mean())},
                "median_distance": {"lipxai": sig(np.median(dist_j), 4),
                                    "torch": sig(np.median(dist_t), 4)},
                "fraction_same_distance_1pct": float(np.mean(close[both])) if both.any() else None,
            })
        notes.append("boundary_pgd: Captum has no boundary search; 'captum_*' there is "
                     "TorchPGDLadder, a line-by-line torch port of lipxai.boundary's PGD ladder "
                     "(same radii, steps, step size, early stop, radius bisection and refinement); "
                     f"it runs on the first {nb} images (--boundary-batch) to bound the run time.")
        notes.append("lipxai chunk / batch_size variants are compiled separately; 'ratio' compares "
                     "lipxai's default with Captum at the same chunk memory, 'best_ratio' the "
                     "fastest variant of each.")

    if args.train_steps == 0:
        notes.append("weights are untrained (torch default init, seed 0)")

    accuracy = float(np.mean(target_np == labels))
    out = {
        "benchmark": "attributions",
        "model": "conv32-relu-maxpool-conv64-relu-maxpool-dense128-relu-dense10 (3x3, padding 1)",
        "weights": ("untrained: torch default init, seed 0" if args.train_steps == 0 else
                    f"torch default init (seed 0) + {args.train_steps} Adam steps (lr {LR}, "
                    f"batch {TRAIN_BATCH}) of cross-entropy on MNIST train"),
        "train_s": round(train_s, 2), "batch_accuracy": accuracy,
        "data": f"mnist/test[:{batch}], preprocess to [0, 1]", "targets": "predicted classes",
        "batch": batch, "dtype": "float32", "quick": args.quick, "repeats": repeats,
        "statistic": "median seconds per image (call time / batch)",
        "max_abs_logit_diff_jax_vs_torch": sig(logit_diff),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch_device": str(device),
        "load_average_1min": {"start": load_at_start, "end": os.getloadavg()[0]},
        "jax_backend": jax.default_backend(), "jax_device": jax.devices()[0].device_kind,
        "versions": versions("jax", "jaxlib", "flax", "numpy", "torch", "captum"),
        "lipxai_compile_s": {k: round(v, 2) for k, v in compile_s.items()},
        "methods": methods,
        "summary": {name: {k: m[k] for k in ("lipxai_s_per_image", "captum_s_per_image", "ratio",
                                             "ratio_xla_options") if k in m}
                    for name, m in methods.items()},
        "over_steps_x_one_backward": over_steps_x_one_backward(methods),
        "notes": notes,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
