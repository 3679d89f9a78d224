"""Host-side input pipeline: images to model inputs, and deterministic batches.

Preprocessing
    :func:`preprocess` turns ``uint8`` images into ``float32`` in ``[0, 1]`` and applies the
    run's normalisation (:func:`lipxai.data.normalize`).

Batching
    :func:`batches` / :func:`batch_for_step` form a deterministic, seedable, shardable and
    resumable stream of ``(x float32 [b, H, W, C], y int32 [b])`` batches from in-memory arrays.
    Conventions:

    * ``batch_size`` is the **per-shard** batch (what one host feeds its local devices). The
      *global* batch of a step is ``batch_size * num_shards`` consecutive entries of the epoch's
      permutation; shard ``s`` takes entries ``[s * batch_size, (s + 1) * batch_size)`` of it,
      so the shards of a step are disjoint and together form the global batch.
    * The permutation of epoch ``e`` is ``np.random.default_rng((seed, e)).permutation(n)``
      (the identity when ``shuffle=False``): a pure function of ``(seed, epoch)``.
    * Steps are counted globally from 0: global step ``k`` belongs to epoch
      ``k // steps_per_epoch`` at position ``k % steps_per_epoch``. A training loop restarted at
      step ``k`` gets exactly the batches of an uninterrupted run with ``start_step=k`` (or by
      calling :func:`batch_for_step` with ``step=k, k+1, ...``).
    * With ``drop_remainder=False`` the last global batch of an epoch is partial; it is split
      into ``num_shards`` contiguous parts whose sizes differ by at most one (a shard may get an
      empty batch when fewer examples than shards remain). Use ``drop_remainder=True`` (the
      default) for multi-host training so that every shard has a full, equal batch.
    * For one shard per host use ``shard_index, num_shards = process_shard()``
      (``jax.process_index(), jax.process_count()``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from lipxai._core import checks
from lipxai.data import normalization

__all__ = ["batch_for_step", "batches", "preprocess", "process_shard", "steps_per_epoch"]


def preprocess(images, *, normalize=None) -> np.ndarray:
    """Images to ``float32 [N, H, W, C]``.

    ``uint8`` images are scaled to ``[0, 1]`` (``x / 255``); floating images must already lie in
    ``[0, 1]``. With ``normalize=(mean, std)`` (scalars or one value per channel, ``std > 0``)
    the result is ``(x - mean) / std`` (:func:`lipxai.data.normalize`); the caller records the
    choice in its run config.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must have rank 4 (NHWC), got shape {images.shape}")
    if images.dtype == np.uint8:
        x = images.astype(np.float32)
        x *= np.float32(1 / 255)
    elif np.issubdtype(images.dtype, np.floating):
        x = images.astype(np.float32)
        if x.size and (not np.isfinite(x).all() or x.min() < 0 or x.max() > 1):
            raise ValueError(
                "images must be uint8 or floating in [0, 1], got floating values in "
                f"[{np.nanmin(x)}, {np.nanmax(x)}]"
            )
    else:
        raise TypeError(f"images must be uint8 or floating, got dtype {images.dtype}")
    return normalization.normalize(x, normalize)


def process_shard() -> tuple[int, int]:
    """``(jax.process_index(), jax.process_count())``: one shard per host."""
    import jax

    return jax.process_index(), jax.process_count()


def steps_per_epoch(
    n: int, batch_size: int, num_shards: int = 1, drop_remainder: bool = True
) -> int:
    """Global steps per epoch for ``n`` examples, per-shard ``batch_size`` and ``num_shards``."""
    n = checks.positive_int("n", n)
    batch_size = checks.positive_int("batch_size", batch_size)
    num_shards = checks.positive_int("num_shards", num_shards)
    global_batch = batch_size * num_shards
    if drop_remainder:
        if global_batch > n:
            raise ValueError(
                f"batch_size * num_shards = {batch_size} * {num_shards} = {global_batch} is larger "
                f"than the number of examples ({n}) with drop_remainder=True: no batch would be "
                "produced"
            )
        return n // global_batch
    return -(-n // global_batch)


@dataclasses.dataclass(frozen=True)
class _Plan:
    n: int
    batch_size: int
    num_shards: int
    shard_index: int
    seed: int
    shuffle: bool
    drop_remainder: bool
    steps: int  # per epoch


def _plan(images, labels, batch_size, seed, shuffle, drop_remainder, shard_index, num_shards):
    images_shape = np.shape(images)
    if len(images_shape) != 4:
        raise ValueError(f"images must have rank 4 (NHWC), got shape {tuple(images_shape)}")
    labels_dtype = getattr(labels, "dtype", None)
    if labels_dtype is None or not np.issubdtype(labels_dtype, np.integer):
        raise TypeError(f"labels must be an integer array, got dtype {labels_dtype}")
    n = images_shape[0]
    if np.shape(labels) != (n,):
        raise ValueError(f"labels must have shape ({n},) to match images, got {np.shape(labels)}")
    if n == 0:
        raise ValueError("images must hold at least one example, got 0")
    batch_size = checks.positive_int("batch_size", batch_size)
    num_shards = checks.positive_int("num_shards", num_shards)
    shard_index = checks.positive_int("shard_index", shard_index, minimum=0)
    if shard_index >= num_shards:
        raise ValueError(f"shard_index must be in [0, num_shards={num_shards}), got {shard_index}")
    seed = checks.positive_int("seed", seed, minimum=0)
    if not isinstance(shuffle, bool):
        raise TypeError(f"shuffle must be a bool, got {shuffle!r}")
    if not isinstance(drop_remainder, bool):
        raise TypeError(f"drop_remainder must be a bool, got {drop_remainder!r}")
    steps = steps_per_epoch(n, batch_size, num_shards, drop_remainder)
    return _Plan(n, batch_size, num_shards, shard_index, seed, shuffle, drop_remainder, steps)


def _permutation(plan: _Plan, epoch: int) -> np.ndarray:
    if not plan.shuffle:
        return np.arange(plan.n)
    return np.random.default_rng((plan.seed, epoch)).permutation(plan.n)


def _shard_indices(plan: _Plan, perm: np.ndarray, position: int) -> np.ndarray:
    """Indices of this shard's part of the global batch at ``position`` within an epoch."""
    global_batch = plan.batch_size * plan.num_shards
    start = position * global_batch
    size = min(global_batch, plan.n - start)
    if size == global_batch:
        lo = plan.shard_index * plan.batch_size
        hi = lo + plan.batch_size
    else:  # partial last batch (drop_remainder=False): near-equal contiguous parts
        base, extra = divmod(size, plan.num_shards)
        lo = plan.shard_index * base + min(plan.shard_index, extra)
        hi = lo + base + (plan.shard_index < extra)
    return perm[start + lo : start + hi]


def _gather(images, labels, idx, normalize):
    x = preprocess(np.asarray(images)[idx], normalize=normalize)
    return x, np.asarray(labels, np.int64)[idx].astype(np.int32)


def batch_for_step(
    images,
    labels,
    batch_size: int,
    step: int,
    *,
    seed: int,
    shuffle: bool = True,
    drop_remainder: bool = True,
    shard_index: int = 0,
    num_shards: int = 1,
    normalize=None,
) -> tuple[np.ndarray, np.ndarray]:
    """The batch of global ``step`` (counted from 0 over all epochs) for this shard.

    Equal to the ``step``-th batch yielded by ``batches(..., num_epochs=None)`` with the same
    arguments: epoch ``step // steps_per_epoch``, position ``step % steps_per_epoch`` in that
    epoch's permutation. Returns ``(x float32 [b, H, W, C], y int32 [b])`` (``b = batch_size``
    except possibly at the end of an epoch when ``drop_remainder=False``).
    """
    plan = _plan(images, labels, batch_size, seed, shuffle, drop_remainder, shard_index, num_shards)
    step = checks.positive_int("step", step, minimum=0)
    epoch, position = divmod(step, plan.steps)
    idx = _shard_indices(plan, _permutation(plan, epoch), position)
    return _gather(images, labels, idx, normalize)


def batches(
    images,
    labels,
    batch_size: int,
    *,
    seed: int,
    epoch: int = 0,
    num_epochs: int | None = 1,
    start_step: int | None = None,
    shuffle: bool = True,
    drop_remainder: bool = True,
    shard_index: int = 0,
    num_shards: int = 1,
    normalize=None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Deterministic batches ``(x float32 [b, H, W, C], y int32 [b])`` of this shard.

    Yields the global steps ``[first, (epoch + num_epochs) * steps_per_epoch)`` in order, where
    ``first = start_step`` when given (a global step, counted from 0 over all epochs, in
    ``[epoch * spe, (epoch + num_epochs) * spe]``), else ``epoch * spe``; ``num_epochs=None``
    iterates forever. Each batch equals ``batch_for_step(..., step)``. See the module docstring for
    the sharding convention (``batch_size`` is per shard; global batch
    ``batch_size * num_shards``).

    Typical uses: one epoch at a time ``batches(x, y, b, seed=s, epoch=e)``; a whole run resumed
    at global step ``k``: ``batches(x, y, b, seed=s, num_epochs=E, start_step=k)``.
    Arguments are validated when called, before the first batch is requested.
    """
    plan = _plan(images, labels, batch_size, seed, shuffle, drop_remainder, shard_index, num_shards)
    epoch = checks.positive_int("epoch", epoch, minimum=0)
    if num_epochs is not None:
        num_epochs = checks.positive_int("num_epochs", num_epochs, minimum=0)
    first = epoch * plan.steps
    stop = None if num_epochs is None else (epoch + num_epochs) * plan.steps
    if start_step is not None:
        start_step = checks.positive_int("start_step", start_step, minimum=0)
        if start_step < first or (stop is not None and start_step > stop):
            raise ValueError(
                f"start_step must be a global step in [{first}, {stop if stop is not None else 'inf'}]"
                f" (epoch={epoch}, num_epochs={num_epochs}, steps_per_epoch={plan.steps}), "
                f"got {start_step}"
            )
        first = start_step
    normalization.check_normalize(normalize, np.shape(images)[-1])  # fail now, not at a batch
    # host arrays once (a jax array would otherwise be copied to the host at every batch)
    return _iterate(plan, np.asarray(images), np.asarray(labels), first, stop, normalize)


def _iterate(plan, images, labels, first, stop, normalize):
    step = first
    perm_epoch, perm = -1, None
    while stop is None or step < stop:
        epoch, position = divmod(step, plan.steps)
        if epoch != perm_epoch:
            perm_epoch, perm = epoch, _permutation(plan, epoch)
        yield _gather(images, labels, _shard_indices(plan, perm, position), normalize)
        step += 1
