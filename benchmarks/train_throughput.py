"""Train throughput (images/s) of the quickstart model on real MNIST: lipxai vs deel-torchlip.

    TFDS_DATA_DIR=/path/to/tfds python benchmarks/train_throughput.py [--quick] [--steps N]

lipxai: model, loss and optimiser of configs/mnist_lip.py (lipxai.train.build), the jitted step
of lipxai.train.step over a data mesh of all devices (lipxai.train.sharding), as the training
loop runs it. deel-torchlip: the same CNN as benchmarks/lipschitz_layers.py
(_torch_reference.TorchlipBench, given the config's dense width, HKR alpha/min_margin and Adam
learning rate; the lr schedule does not change a step's cost, so torch keeps the peak lr), on
CUDA when torch has it, else on CPU. Both train on the same MNIST train batches (load_split + batch_for_step with the config's
seed); MNIST must be prepared: the script never uses random data and exits 1 without it.

Windows of --steps steps alternate (lipxai step, torchlip step, lipxai end to end, ...) over the
same batches; each window is timed until its work is done, and the median and the best window
are reported (other processes on the machine lower both; check load_average_1min).
  step        the batches are already on the device (put_batch / torch tensors): the step alone.
  end_to_end  lipxai as lipxai.train.loop runs: batch_for_step + put_batch + step each step.
throughput_ratio_lipxai_over_torchlip = lipxai step median / torchlip step median (higher is
better for lipxai). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout's lipxai
from lipxai import data
from lipxai.train import config as config_lib
from lipxai.train import sharding
from lipxai.train.build import build_loss, build_model, build_optimizer
from lipxai.train.state import init_state
from lipxai.train.step import make_train_step

from _common import versions  # noqa: E402
from _torch_reference import TorchlipBench, import_peers, nchw, skipped_note  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "mnist_lip.py"
THREADS = 2  # torch threads of the torchlip twin, as in lipschitz_layers.py


class LipxaiTrainer:
    """The quickstart state and jitted step, fed like lipxai.train.loop feeds them."""

    def __init__(self, cfg, images, labels):
        self.cfg, self.images, self.labels = cfg, images, labels
        self.process, self.processes = data.process_shard()
        self.local_batch = cfg.train.batch_size // self.processes
        self.normalize = tuple(cfg.data.normalize) if cfg.data.normalize else None
        self.mesh = sharding.data_mesh()
        sharding.check_batch_divisible(cfg.train.batch_size, self.mesh)
        model = build_model(cfg.model)
        optimizer = build_optimizer(cfg.optim, cfg.train.num_steps)
        self.step_fn = make_train_step(model, build_loss(cfg.loss), optimizer)
        sample = data.preprocess(images[:1], normalize=self.normalize)
        state = init_state(model, optimizer, jax.random.PRNGKey(cfg.seed), sample)
        self.state = sharding.put_replicated(state, self.mesh)

    def host_batch(self, step):
        return data.batch_for_step(self.images, self.labels, self.local_batch, step,
                                   seed=self.cfg.seed, shard_index=self.process,
                                   num_shards=self.processes, normalize=self.normalize)

    def device_batch(self, host_batch):
        return sharding.put_batch(host_batch, self.mesh)

    def run(self, device_batches):
        for x, y in device_batches:
            self.state, metrics = self.step_fn(self.state, x, y)
        jax.block_until_ready(metrics)

    def run_end_to_end(self, steps):
        for step in steps:
            x, y = self.device_batch(self.host_batch(step))
            self.state, metrics = self.step_fn(self.state, x, y)
        jax.block_until_ready(metrics)


class TorchlipTrainer(TorchlipBench):
    """_torch_reference's torchlip CNN with the config's dense width, loss and Adam lr, on ``device``."""

    def __init__(self, torch, torchlip, cfg, host_batch, device):
        if tuple(cfg.model.channels) != (32, 64) or len(cfg.model.dense) != 1:
            raise ValueError("the torchlip twin is conv32-conv64-dense(h): got channels "
                             f"{cfg.model.channels}, dense {cfg.model.dense}")
        super().__init__(torch, torchlip, *host_batch, alpha=cfg.loss.alpha,
                         min_margin=cfg.loss.min_margin, lr=cfg.optim.lr, threads=THREADS,
                         hidden=cfg.model.dense[0], downsample=cfg.model.get("downsample", "pool"),
                         device=device)
        self.device, self.classes = device, cfg.model.num_classes

    def device_batch(self, host_batch):
        x, y = host_batch
        y = self.torch.nn.functional.one_hot(self.torch.from_numpy(y).long(), self.classes).float()
        return nchw(self.torch, x).to(self.device), y.to(self.device)

    def run(self, device_batches):
        for self.x, self.y in device_batches:
            self.train_step()
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()


def images_per_s(seconds, images):
    rates = [images / s for s in seconds]
    return {"median": round(statistics.median(rates), 1), "best": round(max(rates), 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few short windows (under a minute)")
    parser.add_argument("--steps", type=int, help="train steps per window (default 4 quick, else 20)")
    args = parser.parse_args()
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be at least 1")
    windows, steps, warmup = (3, 4, 1) if args.quick else (10, 20, 3)
    steps = args.steps or steps
    load_at_start = os.getloadavg()[0]

    cfg = config_lib.load_config(str(CONFIG))
    try:
        images, labels = data.load_split(cfg.data.name, cfg.data.train_split,
                                         data_dir=cfg.data.data_dir or None)
    except data.DatasetNotFoundError as error:
        print(error, file=sys.stderr)
        sys.exit(1)

    lipxai = LipxaiTrainer(cfg, images, labels)
    torch, torchlip = import_peers("torch", "deel.torchlip", required=False) or (None, None)
    torch_lip = None
    if torch is not None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        torch_lip = TorchlipTrainer(torch, torchlip, cfg, lipxai.host_batch(0), device)

    # warm-up (compilation included) on steps [0, warmup), then windows on the following steps
    start = time.perf_counter()
    lipxai.run([lipxai.device_batch(lipxai.host_batch(0))])
    first_step_s = time.perf_counter() - start
    warm = [lipxai.host_batch(s) for s in range(warmup)]
    lipxai.run([lipxai.device_batch(b) for b in warm])
    lipxai.run_end_to_end(range(warmup))
    if torch_lip is not None:
        torch_lip.run([torch_lip.device_batch(b) for b in warm])

    seconds = {"lipxai_step": [], "torchlip_step": [], "lipxai_end_to_end": []}
    for window in range(windows):
        step_range = range(warmup + window * steps, warmup + (window + 1) * steps)
        host = [lipxai.host_batch(s) for s in step_range]
        runs = {"lipxai_step": (lipxai.run, [lipxai.device_batch(b) for b in host])}
        if torch_lip is not None:
            runs["torchlip_step"] = (torch_lip.run, [torch_lip.device_batch(b) for b in host])
        runs["lipxai_end_to_end"] = (lipxai.run_end_to_end, step_range)
        for name, (run, batches) in runs.items():
            start = time.perf_counter()
            run(batches)
            seconds[name].append(time.perf_counter() - start)

    window_images = steps * cfg.train.batch_size
    result = {
        "benchmark": "train_throughput",
        "config": "configs/mnist_lip.py", "dataset": f"{cfg.data.name}/{cfg.data.train_split}",
        "train_examples": len(labels), "batch_size": cfg.train.batch_size,
        "quick": args.quick, "windows": windows, "steps_per_window": steps, "warmup_steps": warmup,
        "cpu_count": os.cpu_count(),
        "load_average_1min": {"start": load_at_start, "end": os.getloadavg()[0]},
        "versions": versions("jax", "jaxlib", "flax", "optax",
                             *(("torch", "deel-torchlip") if torch is not None else ())),
        "lipxai": {
            "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
            "mesh_devices": lipxai.mesh.size, "model": dict(cfg.model), "loss": dict(cfg.loss),
            "first_step_s": round(first_step_s, 3),
            "step_images_per_s": images_per_s(seconds["lipxai_step"], window_images),
            "end_to_end_images_per_s": images_per_s(seconds["lipxai_end_to_end"], window_images),
        },
        "torchlip": None, "throughput_ratio_lipxai_over_torchlip": None,
    }
    if torch_lip is None:
        result["note"] = skipped_note("deel-torchlip")
    else:
        device = torch_lip.device
        result["torchlip"] = {
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(),
            "model": "SpectralConv2d x2, SpectralLinear, FrobeniusLinear (_torch_reference.py)",
            "optimizer": f"Adam(lr={cfg.optim.lr}) without schedule",
            "step_images_per_s": images_per_s(seconds["torchlip_step"], window_images),
        }
        result["throughput_ratio_lipxai_over_torchlip"] = round(
            result["lipxai"]["step_images_per_s"]["median"]
            / result["torchlip"]["step_images_per_s"]["median"], 3)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
