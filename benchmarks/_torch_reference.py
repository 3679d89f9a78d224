"""The torch side shared by the benchmarks that compare lipxai with a torch peer library.

- peers: :func:`import_peers` imports torch and the peer libraries, with one message naming
  the ``peers`` extra when one is missing;
- device and layout: :func:`torch_device`, :func:`synced` (CUDA synchronisation for timing),
  :func:`nchw` / :func:`nhwc` (torch is NCHW, lipxai NHWC);
- the reference CNN (attributions, metrics): conv32-conv64-dense128 built in torch (default
  init, seed 0), trained by a few Adam steps on MNIST train, its weights ported to the params
  of ``_common.cnn`` (HWIO kernels, dense rows permuted from torch's NCHW flatten order to
  NHWC's), and :class:`Reference`: both models on the same MNIST test images, which refuses
  to time anything unless their logits agree to ``LOGIT_ATOL``;
- :class:`TorchlipBench` (lipschitz_layers, train_throughput): the deel-torchlip twin of
  ``lipxai.nn.zoo.cnn`` with its loss and optimiser;
- :class:`TorchPGDLadder` (attributions): lipxai.boundary's L2 PGD ladder ported to torch, the
  reference of a boundary search that Captum does not have.
"""

from __future__ import annotations

import importlib
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lipxai import data

from _common import cnn, mnist_test_images

SEED, CLASSES, LR, TRAIN_BATCH, LOGIT_ATOL = 0, 10, 1e-3, 128, 1e-4
PEERS_INSTALL = "install the peers extra (pip install torch==2.13.0 && pip install -e '.[peers]')"
PEER_NAMES = {"captum.attr": "captum", "deel.torchlip": "deel-torchlip"}


def log(message):
    """Progress on stderr, prefixed by the running script's name and the time."""
    name = Path(sys.argv[0]).stem
    print(f"[{name} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def skipped_note(peer):
    """The JSON note of a benchmark whose optional ``peer`` comparison could not run."""
    return f"{peer} comparison skipped: {PEERS_INSTALL}"


def import_peers(*modules, required=True):
    """The imported ``modules`` (e.g. "torch", "captum.attr"). When one is missing: exit with a
    message naming them all and the install command, or return None if not ``required``."""
    try:
        return [importlib.import_module(name) for name in modules]
    except ImportError as error:
        if not required:
            return None
        names = " and ".join(PEER_NAMES.get(name, name) for name in modules)
        raise SystemExit(f"this benchmark needs {names}: {PEERS_INSTALL} ({error})") from None


# device and layout


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
    """NHWC numpy/JAX images -> a contiguous NCHW CPU tensor."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def nhwc(t):
    """An NCHW tensor (any device) -> NHWC numpy."""
    return t.detach().cpu().numpy().transpose(0, 2, 3, 1)


# the reference CNN: torch, trained, and the same weights as a JAX function


def torch_cnn(torch):
    """The torch twin of ``_common.cnn`` (max-pool), default init with seed ``SEED``."""
    nn = torch.nn
    torch.manual_seed(SEED)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),  # NCHW order: (C, H, W)
        nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, CLASSES),
    )


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


def reference_cnn(torch, train_steps, device):
    """:func:`torch_cnn` after :func:`train_torch`, frozen in eval mode (explanations need input
    gradients only) and moved to ``device`` (in full float32 on CUDA: TF32 off, as the logits
    must agree to ``LOGIT_ATOL``), and its weights ported to ``_common.cnn``'s params.
    Returns (model, params, training seconds)."""
    model = torch_cnn(torch)
    log(f"training {train_steps} steps")
    seconds = train_torch(torch, model, train_steps)
    model = model.float().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    params = port_weights(model)
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    return model.to(device), params, seconds


def port_weights(model):
    """Torch weights -> params of ``_common.cnn`` (HWIO kernels, dense rows in NHWC order)."""
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


class Reference:
    """The reference CNN on the first ``batch`` real MNIST test images, both sides ready to time.

    ``model`` (torch, on ``device``) and ``params`` (``_common.cnn``) from :func:`reference_cnn`;
    ``x`` (JAX, NHWC) and ``x_t`` (torch, NCHW, on ``device``) the same images, ``labels`` their
    labels; ``logits_j`` / ``logits_t`` (numpy) of both models, which must agree to
    ``LOGIT_ATOL`` x max(1, max |logit|) (else exit; ``logit_diff`` is the max |difference|);
    the predicted classes as ``target_np`` (int32), ``target`` (JAX) and ``target_t`` (torch).
    """

    def __init__(self, torch, batch, train_steps, device):
        x_np, self.labels = mnist_test_images(batch)
        self.torch, self.device, self.batch = torch, device, batch
        self.model, self.params, self.train_s = reference_cnn(torch, train_steps, device)
        self.x, self.x_t = jnp.asarray(x_np), nchw(torch, x_np).to(device)
        with torch.no_grad():
            self.logits_t = self.model(self.x_t).cpu().numpy()
        self.logits_j = np.asarray(jax.jit(cnn)(self.params, self.x))
        self.logit_diff = float(np.abs(self.logits_j - self.logits_t).max())
        if self.logit_diff > LOGIT_ATOL * max(1.0, float(np.abs(self.logits_t).max())):
            raise SystemExit("ported JAX model disagrees with torch: max |logit diff| "
                             f"{self.logit_diff}")
        self.target_np = self.logits_t.argmax(1).astype(np.int32)
        self.target = jnp.asarray(self.target_np)
        self.target_t = torch.from_numpy(self.target_np).long().to(device)

    def synced(self, call):
        """``call`` made blocking on torch's device (:func:`synced`)."""
        return synced(self.torch, self.device, call)


# deel-torchlip


class TorchlipBench:
    """``lipxai.nn.zoo.cnn``'s twin in deel-torchlip (its layer defaults): conv32 -> GroupSort2
    -> L2Pool2 -> conv64 (3x3 then L2Pool2, or ``downsample="patch"``: 2x2 stride 2) ->
    GroupSort2 -> flatten -> dense ``hidden`` -> GroupSort2 -> dense10, multiclass HKR loss,
    torch.optim.Adam; ``x`` NHWC numpy, ``y`` int labels (one-hot here)."""

    def __init__(self, torch, torchlip, x, y, *, alpha, min_margin, lr, threads, hidden=128,
                 downsample="pool", device="cpu"):
        torch.set_num_threads(threads)
        torch.manual_seed(SEED)
        self.torch = torch
        self.x = nchw(torch, x)
        self.y = torch.nn.functional.one_hot(torch.from_numpy(y).long(), CLASSES).float()
        if downsample == "pool":   # zoo.cnn's second block: 3x3 convolution, then L2 pooling
            second = [torchlip.SpectralConv2d(32, 64, kernel_size=3, padding="same"),
                      torchlip.GroupSort2(), torchlip.ScaledL2NormPool2d(kernel_size=2)]
        else:                      # downsample="patch": a 2x2 stride-2 convolution
            second = [torchlip.SpectralConv2d(32, 64, kernel_size=2, stride=2), torchlip.GroupSort2()]
        self.model = torchlip.Sequential(
            torchlip.SpectralConv2d(1, 32, kernel_size=3, padding="same"),
            torchlip.GroupSort2(),
            torchlip.ScaledL2NormPool2d(kernel_size=2),
            *second,
            torch.nn.Flatten(),
            torchlip.SpectralLinear(64 * 7 * 7, hidden),
            torchlip.GroupSort2(),
            torchlip.FrobeniusLinear(hidden, CLASSES, disjoint_neurons=True),
        ).to(device)
        self.loss_fn = torchlip.HKRMulticlassLoss(alpha=alpha, min_margin=min_margin)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)

    def train_step(self):
        self.optimizer.zero_grad()
        self.loss_fn(self.model(self.x), self.y).backward()
        self.optimizer.step()

    def prepare_inference(self):
        self.model.eval()
        plain = self.model.vanilla_export().eval()

        def infer():
            with self.torch.no_grad():
                plain(self.x)

        self.infer = infer

    def iterations(self):
        """torchlip's defaults, and the Björck iterations one train step actually runs per layer."""
        from deel.torchlip import normalizers

        torch, counts = self.torch, []
        bjorck_module = importlib.import_module("deel.torchlip.utils.bjorck_norm")
        original = bjorck_module.bjorck_normalization

        class CountMatmuls(torch.overrides.TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                counts[-1] += func is torch.mm
                return func(*args, **(kwargs or {}))

        def counted(*args, **kwargs):
            counts.append(0)
            with CountMatmuls():
                return original(*args, **kwargs)

        bjorck_module.bjorck_normalization = counted
        try:
            self.train_step()
        finally:
            bjorck_module.bjorck_normalization = original
        power_iters = {m.n_power_iterations for m in self.model.modules()
                       if type(m).__name__ == "_SpectralNorm"}
        return {
            "spectral_power_iterations_per_step": sorted(power_iters),
            "bjorck_maxiter": normalizers.DEFAULT_MAXITER_BJORCK,
            "bjorck_eps": normalizers.DEFAULT_EPS_BJORCK,
            # 2 matmuls per iteration; layers in forward order
            "bjorck_iterations_run": dict(zip(("conv32", "conv64", "dense128"),
                                              [c // 2 for c in counts], strict=True)),
            "bjorck_grad_through_last_iterations": normalizers.DEFAULT_BJORK_DETACH - 1,
        }


# torch reference of lipxai.boundary.search(method="pgd", norm="l2")


class TorchPGDLadder:
    """lipxai.boundary's L2 PGD ladder and refinement transcribed to torch, same defaults.

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
        with torch.no_grad():  # the refinement
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
