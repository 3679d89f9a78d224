"""Tests of lipxai.data: real MNIST / Fashion-MNIST reads, caching, preparation, batching."""

from __future__ import annotations

import importlib.util
import shutil
import sys

import numpy as np
import pytest
from _datasets import prepared, raw_mnist

from lipxai import data
from lipxai.data import tfds as data_tfds

# Known facts: the label counts of the MNIST test set (LeCun et al.) and of Fashion-MNIST.
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def mnist_dir():
    """The folder ``DATA_DIR/mnist/3.0.1`` of the prepared MNIST."""
    return prepared("mnist")


@pytest.fixture(scope="module")
def data_root(mnist_dir):
    """The tfds data folder holding MNIST; no test may write into it (checked at the end)."""
    root = mnist_dir.parents[1]
    before = _listing(root)
    yield root
    assert _listing(root) == before


@pytest.fixture(scope="module")
def mnist_test(data_root):
    return data.load_split("mnist", "test", data_dir=data_root, cache=False)


@pytest.fixture(scope="module")
def fashion_test(data_root):
    return data.load_split("fashion_mnist", "test", data_dir=prepared("fashion_mnist").parents[1],
                           cache=False)


# ------------------------------------------------------------------------------------------
# Catalogue
# ------------------------------------------------------------------------------------------


def test_catalogue():
    assert set(data.DATASETS) == {"mnist", "fashion_mnist", "cifar10", "cifar100", "imagenet2012"}
    assert data.DATASETS["mnist"].image_shape == (28, 28, 1)
    assert data.DATASETS["cifar10"].image_shape == (32, 32, 3)
    assert data.DATASETS["cifar100"].num_classes == 100
    assert data.DATASETS["imagenet2012"].num_classes == 1000
    assert data.DATASETS["imagenet2012"].manual_download
    for spec in data.DATASETS.values():
        assert spec.name in data.DATASETS and spec.splits


# ------------------------------------------------------------------------------------------
# Real data
# ------------------------------------------------------------------------------------------


def test_mnist_test_split(mnist_test):
    images, labels = mnist_test
    assert images.shape == (10000, 28, 28, 1) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.int32
    assert np.bincount(labels, minlength=10).tolist() == MNIST_TEST_COUNTS
    # real digits: mostly black background, some white strokes, not noise
    assert images.min() == 0 and images.max() == 255
    assert 0.75 < np.mean(images == 0) < 0.85
    # the mean image of each class differs from the others (class-dependent content)
    means = np.stack([images[labels == c].mean(0) for c in range(10)])
    assert np.min([np.abs(means[a] - means[b]).mean() for a in range(10) for b in range(a)]) > 5


def test_fashion_mnist_test_split(fashion_test, mnist_test):
    images, labels = fashion_test
    assert images.shape == (10000, 28, 28, 1) and images.dtype == np.uint8
    assert labels.dtype == np.int32
    assert np.bincount(labels, minlength=10).tolist() == [1000] * 10
    assert not np.array_equal(images, mnist_test[0])


def test_data_dir_defaults_to_tfds_data_dir_env(monkeypatch, data_root, mnist_test, tmp_path):
    monkeypatch.setenv("TFDS_DATA_DIR", str(data_root))
    images, labels = data.load_split("mnist", "test[:100]", cache_dir=tmp_path)
    np.testing.assert_array_equal(images, mnist_test[0][:100])
    np.testing.assert_array_equal(labels, mnist_test[1][:100])


# ------------------------------------------------------------------------------------------
# Cache
# ------------------------------------------------------------------------------------------


def _no_decode(*args, **kwargs):
    raise AssertionError("decoded although a valid cache exists")


def test_cache_in_cache_dir_only(data_root, mnist_test, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    first = data.load_split("mnist", "test", data_dir=data_root, cache_dir=cache_dir)
    files = list(cache_dir.rglob("*.npz"))
    assert [f.relative_to(cache_dir).as_posix() for f in files] == ["mnist/3.0.1/test.npz"]
    monkeypatch.setattr(data_tfds, "_decode", _no_decode)
    second = data.load_split("mnist", "test", data_dir=data_root, cache_dir=cache_dir)
    for a, b, c in zip(first, second, mnist_test, strict=False):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, c)
        assert b.dtype == c.dtype


def test_cache_never_in_a_writable_data_folder_and_is_verified(mnist_dir, mnist_test, tmp_path,
                                                                 monkeypatch):
    data_dir = tmp_path / "tfds"
    version_dir = data_dir / "mnist" / "3.0.1"
    version_dir.mkdir(parents=True)
    for f in mnist_dir.iterdir():
        if "train" not in f.name:  # the test split suffices
            shutil.copyfile(f, version_dir / f.name)
    copied = _listing(data_dir)
    cache_dir = tmp_path / "cache"
    data.load_split("mnist", "test", data_dir=data_dir, cache_dir=cache_dir)
    assert _listing(data_dir) == copied  # the user's data folder stays as it was
    (cache_file,) = cache_dir.rglob("*.npz")

    with monkeypatch.context() as m:  # a valid cache is read, not decoded
        m.setattr(data_tfds, "_decode", _no_decode)
        images, labels = data.load_split("mnist", "test", data_dir=data_dir, cache_dir=cache_dir)
        np.testing.assert_array_equal(images, mnist_test[0])
        np.testing.assert_array_equal(labels, mnist_test[1])

    # a cache whose record count does not match is ignored and rewritten
    with np.load(cache_file) as z:
        meta = z["meta"]
        np.savez(cache_file, images=z["images"][:10], labels=z["labels"][:10], meta=meta)
    images, labels = data.load_split("mnist", "test", data_dir=data_dir, cache_dir=cache_dir)
    assert images.shape[0] == labels.shape[0] == 10000
    np.testing.assert_array_equal(labels, mnist_test[1])
    with np.load(cache_file) as z:
        assert z["labels"].shape == (10000,)

    # an unreadable cache is ignored too
    cache_file.write_bytes(b"not a zip file")
    images, labels = data.load_split("mnist", "test", data_dir=data_dir, cache_dir=cache_dir)
    np.testing.assert_array_equal(images, mnist_test[0])


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("LIPXAI_CACHE_DIR", str(tmp_path))
    assert data.default_cache_dir() == tmp_path
    monkeypatch.delenv("LIPXAI_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data.default_cache_dir() == tmp_path / "lipxai"


def test_variable_size_images_are_resized_and_center_cropped():
    # imagenet2012 path (no ImageNet here): shorter side to 256, center crop 224
    image = np.zeros((300, 400, 3), np.uint8)
    image[:, 200:] = 255  # right half white
    out = data_tfds._fit(image, (224, 224, 3))
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert out[:, :100].max() == 0 and out[:, 124:].min() == 255
    same = np.full((224, 224, 3), 7, np.uint8)
    assert data_tfds._fit(same, (224, 224, 3)) is same


# ------------------------------------------------------------------------------------------
# Missing data
# ------------------------------------------------------------------------------------------


def test_missing_dataset_raises_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setattr(data_tfds, "_decode", _no_decode)
    with pytest.raises(data.DatasetNotFoundError) as info:
        data.load_split("mnist", "test", data_dir=tmp_path)
    err = info.value
    assert isinstance(err, FileNotFoundError)
    message = str(err)
    assert "\n" not in message  # one paragraph
    assert "'mnist'" in message and str(tmp_path) in message
    assert "lipxai prepare-data mnist" in message and "TFDS_DATA_DIR" in message
    assert err.searched == (str(tmp_path),)
    assert list(tmp_path.iterdir()) == []  # nothing downloaded or prepared behind our back


def test_missing_dataset_via_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    with pytest.raises(data.DatasetNotFoundError, match="prepare-data fashion_mnist") as info:
        data.load_split("fashion_mnist", "test")
    assert str(tmp_path) in str(info.value) and "TFDS_DATA_DIR" in str(info.value)


def test_missing_imagenet_gives_manual_instructions(tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as info:
        data.load_split("imagenet2012", "validation", data_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert "image-net.org" in message and "ILSVRC2012_img_val.tar" in message
    assert "prepare-data imagenet2012 --manual-dir" in message


def test_tfrecord_only_dataset_is_reported(tmp_path, mnist_dir):
    version_dir = tmp_path / "mnist" / "3.0.1"
    version_dir.mkdir(parents=True)
    for f in ("dataset_info.json", "features.json"):
        text = (mnist_dir / f).read_text()
        (version_dir / f).write_text(text.replace('"array_record"', '"tfrecord"'))
    with pytest.raises(
        data.DatasetNotFoundError, match="prepared in .* but not in the array_record"
    ):
        data.load_split("mnist", "test", data_dir=tmp_path)


# ------------------------------------------------------------------------------------------
# Preparation
# ------------------------------------------------------------------------------------------

HAS_PREPARE_DEPS = all(
    importlib.util.find_spec(m) is not None for m in ("tensorflow", "importlib_resources")
)


def test_prepare_without_tensorflow_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # makes `import tensorflow` fail
    with pytest.raises(ImportError, match=r'pip install "lipxai\[prepare\]"'):
        data.prepare("mnist", data_dir=tmp_path, manual_dir=raw_mnist())
    assert list(tmp_path.iterdir()) == []


def test_prepare_imagenet_needs_manual_dir(tmp_path):
    with pytest.raises(ValueError, match="manual_dir.*image-net.org"):
        data.prepare("imagenet2012", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="manual_dir"):
        data.prepare("mnist", data_dir=tmp_path, manual_dir=tmp_path / "absent")
    with pytest.raises(ValueError, match="name must be one of"):
        data.prepare("mnist2", data_dir=tmp_path)


@pytest.mark.skipif(not HAS_PREPARE_DEPS, reason="preparing needs tensorflow: lipxai[prepare]")
def test_prepare_mnist_from_raw_files_matches_shared(tmp_path, data_root, mnist_test):
    import tensorflow_datasets as tfds

    out = data.prepare("mnist", data_dir=tmp_path, manual_dir=raw_mnist())
    assert out == tmp_path / "mnist" / "3.0.1"
    assert sorted(p.name for p in out.glob("*.array_record-*")) == sorted(
        p.name for p in (data_root / "mnist" / "3.0.1").glob("*.array_record-*")
    )
    sources = {}
    for split in ("train", "test"):
        mine = tfds.data_source("mnist", split=split, data_dir=str(tmp_path), download=False)
        ref = tfds.data_source("mnist", split=split, data_dir=str(data_root), download=False)
        assert len(mine) == len(ref)
        sources[split] = mine, ref
    images, labels = data.load_split("mnist", "test", data_dir=tmp_path, cache=False)
    np.testing.assert_array_equal(images, mnist_test[0])
    np.testing.assert_array_equal(labels, mnist_test[1])
    mine, ref = sources["train"]
    rng = np.random.default_rng(0)
    for i in rng.choice(len(ref), 500, replace=False).tolist():
        a, b = mine[i], ref[i]
        np.testing.assert_array_equal(a["image"], b["image"])
        assert a["label"] == b["label"]


# ------------------------------------------------------------------------------------------
# Preprocessing
# ------------------------------------------------------------------------------------------


def test_preprocess(mnist_test):
    images = mnist_test[0][:256]
    x = data.preprocess(images)
    assert x.dtype == np.float32 and x.shape == images.shape
    assert x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_allclose(x * 255, images, atol=1e-4)
    np.testing.assert_array_equal(data.preprocess(x), x)  # floats in [0, 1] pass through
    z = data.preprocess(images, normalize=(0.1307, 0.3081))
    np.testing.assert_allclose(z, (x - 0.1307) / 0.3081, rtol=1e-6, atol=1e-6)
    rgb = np.stack([images[..., 0]] * 3, axis=-1)
    zc = data.preprocess(rgb, normalize=([0.1, 0.2, 0.3], [0.5, 0.25, 1.0]))
    np.testing.assert_allclose(zc[..., 1], (x[..., 0] - 0.2) / 0.25, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "images, kwargs, match",
    [
        (np.zeros((2, 28, 28), np.uint8), {}, "images must have rank 4"),
        (np.zeros((2, 4, 4, 1), np.int32), {}, "images must be uint8 or floating"),
        (
            np.full((2, 4, 4, 1), 2.0, np.float32),
            {},
            r"images must be uint8 or floating in \[0, 1\]",
        ),
        (np.zeros((2, 4, 4, 3), np.uint8), {"normalize": 0.5}, "normalize must be None or a pair"),
        (np.zeros((2, 4, 4, 3), np.uint8), {"normalize": ([0, 0], [1, 1])}, "normalize mean"),
        (np.zeros((2, 4, 4, 1), np.uint8), {"normalize": (0.0, 0.0)}, "normalize std must be > 0"),
    ],
)
def test_preprocess_bad_inputs(images, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        data.preprocess(images, **kwargs)


NORMALIZATIONS = [
    ((0.1307,), (0.3081,)),
    (0.5, 0.25),
    ([0.1, 0.2, 0.3], [0.5, 0.25, 1.0]),
]


@pytest.mark.parametrize("normalize", NORMALIZATIONS)
def test_normalize_is_one_map_for_numpy_jax_and_runs(mnist_test, normalize):
    """preprocess (numpy), data.normalize on jax arrays (eager and jitted) and Run.normalize (a
    run's config read back from JSON) give the same float32 values."""
    import jax
    import jax.numpy as jnp
    import ml_collections

    from lipxai.train import config as config_lib
    from lipxai.train.rundir import Run

    images = mnist_test[0][:64]
    channels = len(np.atleast_1d(normalize[0]))
    images = np.repeat(images, channels, axis=-1)
    x = data.preprocess(images)
    expected = data.preprocess(images, normalize=normalize)
    assert expected.dtype == np.float32 and not np.array_equal(expected, x)
    np.testing.assert_allclose(
        expected,
        (x - np.float32(normalize[0])) / np.float32(normalize[1]),
        rtol=1e-6,
    )
    np.testing.assert_array_equal(data.normalize(x, normalize), expected)
    for out in (
        data.normalize(jnp.asarray(x), normalize),
        jax.jit(lambda v: data.normalize(v, normalize))(x),
    ):
        assert isinstance(out, jax.Array) and out.dtype == jnp.float32
        np.testing.assert_array_equal(out, expected)
    config = config_lib.load_json_from_dict({"data": {"name": "mnist", "normalize": normalize}})
    run = Run(workdir="", config=ml_collections.ConfigDict(config), model=None, variables=None,
              step=0)
    np.testing.assert_array_equal(run.normalize(jnp.asarray(x)), expected)
    np.testing.assert_array_equal(jax.jit(run.normalize)(x), expected)


def test_normalize_identity_dtypes_and_bad_inputs():
    import jax.numpy as jnp

    x = np.linspace(0, 1, 2 * 3 * 3 * 2, dtype=np.float32).reshape(2, 3, 3, 2)
    for none in (None, (), []):
        assert data.normalize(x, none) is x
        np.testing.assert_array_equal(data.preprocess(x, normalize=none), x)
    before = x.copy()
    for dtype in (np.float16, np.float32, np.float64, jnp.bfloat16):
        xd = x.astype(dtype)
        out = data.normalize(xd, (0.5, [0.25, 0.3]))
        assert out.dtype == dtype and isinstance(out, np.ndarray)
        one = np.asarray(1, dtype)
        np.testing.assert_array_equal(
            out, (xd - np.asarray(0.5, dtype)) * (one / np.asarray([0.25, 0.3], dtype))
        )
        np.testing.assert_allclose(  # one rounding of (x - mean) / std in that dtype
            out.astype(np.float64), (xd.astype(np.float64) - 0.5) / [0.25, 0.3],
            rtol=float(jnp.finfo(dtype).eps), atol=2 * float(jnp.finfo(dtype).eps),
        )
        jout = data.normalize(jnp.asarray(xd), (0.5, [0.25, 0.3]))
        assert jout.dtype == jnp.asarray(xd).dtype  # float64 is float32 in jax without x64
        if jout.dtype == xd.dtype:
            np.testing.assert_array_equal(np.asarray(jout), out)
    np.testing.assert_array_equal(x, before)  # the input is never changed in place
    with pytest.raises(TypeError, match="x must be a floating array to normalize, got dtype uint8"):
        data.normalize(np.zeros((1, 2, 2, 1), np.uint8), (0.5, 0.5))
    with pytest.raises(ValueError, match="normalize must be None or a pair"):
        data.normalize(x, 0.5)
    with pytest.raises(ValueError, match="normalize mean must be a scalar or have 2 values"):
        data.normalize(x, ([0, 0, 0], 1.0))
    with pytest.raises(ValueError, match="normalize std must be > 0"):
        data.normalize(x, (0.0, [1.0, 0.0]))
    with pytest.raises(ValueError, match="normalize std must be > 0"):
        data.normalize(x.astype(np.float16), (0.0, 1e-10))  # 0 once rounded to float16
    with pytest.raises(ValueError, match="normalize mean must be finite"):
        data.normalize(x, (float("nan"), 1.0))


# ------------------------------------------------------------------------------------------
# Batching
# ------------------------------------------------------------------------------------------


def _toy(n=103):
    """Images whose single pixel encodes the example index (to track examples through batches)."""
    images = (np.arange(n) % 256).astype(np.uint8).reshape(n, 1, 1, 1)
    labels = (np.arange(n) % 10).astype(np.int32)
    return images, labels


def _ids(x):
    return np.rint(x.reshape(len(x), -1)[:, 0] * 255).astype(int)


def test_steps_per_epoch():
    assert data.steps_per_epoch(103, 10) == 10
    assert data.steps_per_epoch(103, 10, drop_remainder=False) == 11
    assert data.steps_per_epoch(103, 10, num_shards=2) == 5
    assert data.steps_per_epoch(103, 10, num_shards=2, drop_remainder=False) == 6
    assert data.steps_per_epoch(100, 10) == 10
    assert data.steps_per_epoch(10, 20, drop_remainder=False) == 1


def test_batches_types_and_epoch_is_permutation():
    images, labels = _toy()
    out = list(data.batches(images, labels, 10, seed=0, drop_remainder=False))
    assert len(out) == 11
    for x, y in out[:-1]:
        assert x.dtype == np.float32 and x.shape == (10, 1, 1, 1)
        assert y.dtype == np.int32 and y.shape == (10,)
    ids = np.concatenate([_ids(x) for x, _ in out])
    assert sorted(ids.tolist()) == list(range(103))  # all covered, no duplicates
    np.testing.assert_array_equal(np.concatenate([y for _, y in out]), labels[ids])
    dropped = np.concatenate([_ids(x) for x, _ in data.batches(images, labels, 10, seed=0)])
    assert len(dropped) == 100 and len(set(dropped.tolist())) == 100
    np.testing.assert_array_equal(dropped, ids[:100])  # same permutation, remainder dropped
    unshuffled = np.concatenate(
        [_ids(x) for x, _ in data.batches(images, labels, 10, seed=5, shuffle=False)]
    )
    np.testing.assert_array_equal(unshuffled, np.arange(100))


def test_batches_deterministic_and_seed_epoch_dependent():
    images, labels = _toy()

    def epoch_ids(**kw):
        return np.concatenate([_ids(x) for x, _ in data.batches(images, labels, 10, **kw)])

    a = epoch_ids(seed=1, epoch=0)
    np.testing.assert_array_equal(a, epoch_ids(seed=1, epoch=0))
    assert not np.array_equal(a, epoch_ids(seed=2, epoch=0))
    assert not np.array_equal(a, epoch_ids(seed=1, epoch=1))
    expected = np.random.default_rng((1, 3)).permutation(103)[:100]
    np.testing.assert_array_equal(epoch_ids(seed=1, epoch=3), expected)


@pytest.mark.parametrize("drop_remainder", [True, False])
def test_shards_are_disjoint_and_form_the_global_batch(drop_remainder):
    images, labels = _toy()
    num_shards, b = 3, 8
    streams = [
        list(
            data.batches(
                images,
                labels,
                b,
                seed=7,
                num_epochs=2,
                shard_index=s,
                num_shards=num_shards,
                drop_remainder=drop_remainder,
            )
        )
        for s in range(num_shards)
    ]
    spe = data.steps_per_epoch(103, b, num_shards, drop_remainder)
    assert all(len(s) == 2 * spe for s in streams)
    for epoch in range(2):
        perm = np.random.default_rng((7, epoch)).permutation(103)
        for pos in range(spe):
            parts = [_ids(streams[s][epoch * spe + pos][0]) for s in range(num_shards)]
            glob = np.concatenate(parts)
            np.testing.assert_array_equal(
                glob, perm[pos * b * num_shards : (pos + 1) * b * num_shards]
            )
            assert len(set(glob.tolist())) == len(glob)
            if drop_remainder or pos < spe - 1:
                assert all(len(p) == b for p in parts)
            else:  # partial last batch: near-equal parts
                assert max(map(len, parts)) - min(map(len, parts)) <= 1
        if not drop_remainder:
            covered = np.concatenate(
                [
                    _ids(streams[s][epoch * spe + p][0])
                    for s in range(num_shards)
                    for p in range(spe)
                ]
            )
            assert sorted(covered.tolist()) == list(range(103))


def test_resume_from_any_step_matches_uninterrupted_run():
    images, labels = _toy()
    kw = {"seed": 11, "shard_index": 1, "num_shards": 2}
    full = list(data.batches(images, labels, 6, num_epochs=3, **kw))
    spe = data.steps_per_epoch(103, 6, 2)
    assert len(full) == 3 * spe
    for k in (0, 1, spe - 1, spe, spe + 3, 3 * spe - 1):
        x, y = data.batch_for_step(images, labels, 6, k, **kw)
        np.testing.assert_array_equal(x, full[k][0])
        np.testing.assert_array_equal(y, full[k][1])
        resumed = list(data.batches(images, labels, 6, num_epochs=3, start_step=k, **kw))
        assert len(resumed) == len(full) - k
        for (xa, ya), (xb, yb) in zip(resumed, full[k:], strict=False):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
    # an epoch-at-a-time loop sees the same stream
    per_epoch = [
        batch for e in range(3) for batch in data.batches(images, labels, 6, epoch=e, **kw)
    ]
    for (xa, _), (xb, _) in zip(per_epoch, full, strict=False):
        np.testing.assert_array_equal(xa, xb)
    # resuming mid-epoch within an epoch-at-a-time loop
    rest = list(data.batches(images, labels, 6, epoch=1, start_step=spe + 2, **kw))
    assert len(rest) == spe - 2
    np.testing.assert_array_equal(rest[0][0], full[spe + 2][0])
    # infinite stream
    stream = data.batches(images, labels, 6, num_epochs=None, start_step=5 * spe, **kw)
    np.testing.assert_array_equal(
        next(stream)[0], data.batch_for_step(images, labels, 6, 5 * spe, **kw)[0]
    )


def test_batches_on_real_data(mnist_test):
    images, labels = mnist_test
    x, y = next(data.batches(images, labels, 128, seed=0, normalize=(0.1307, 0.3081)))
    assert x.shape == (128, 28, 28, 1) and x.dtype == np.float32 and y.dtype == np.int32
    idx = np.random.default_rng((0, 0)).permutation(10000)[:128]
    np.testing.assert_allclose(x, (images[idx] / 255.0 - 0.1307) / 0.3081, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(y, labels[idx])


# ------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"batch_size": 2.5}, "batch_size must be an integer >= 1"),
        ({"batch_size": 200}, "batch_size \\* num_shards .* larger than the number of examples"),
        ({"batch_size": 60, "num_shards": 2}, "batch_size \\* num_shards = 60 \\* 2"),
        ({"shard_index": 2, "num_shards": 2}, "shard_index must be in \\[0, num_shards=2\\)"),
        ({"shard_index": -1, "num_shards": 2}, "shard_index must be an integer >= 0"),
        ({"num_shards": 0}, "num_shards must be an integer >= 1"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"seed": None}, "seed must be an integer >= 0"),
        ({"epoch": -1}, "epoch must be an integer >= 0"),
        ({"start_step": -1}, "start_step must be an integer >= 0"),
        ({"epoch": 2, "start_step": 3}, "start_step must be a global step in"),
        ({"num_epochs": 1, "start_step": 500}, "start_step must be a global step in"),
        ({"normalize": (0.5, -1.0)}, "normalize std must be > 0"),
        ({"shuffle": 1}, "shuffle must be a bool"),
    ],
)
def test_batches_bad_inputs(kwargs, match):
    images, labels = _toy()
    args = {"batch_size": 10, "seed": 0, **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        data.batches(images, labels, **args)  # raised at the call, not at the first next()


def test_bad_arrays_and_steps():
    images, labels = _toy()
    with pytest.raises(ValueError, match="labels must have shape"):
        data.batches(images, labels[:-1], 10, seed=0)
    with pytest.raises(TypeError, match="labels must be an integer array"):
        data.batches(images, labels.astype(np.float32), 10, seed=0)
    with pytest.raises(ValueError, match="images must have rank 4"):
        data.batches(images[..., 0], labels, 10, seed=0)
    with pytest.raises(ValueError, match="step must be an integer >= 0"):
        data.batch_for_step(images, labels, 10, -1, seed=0)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        data.steps_per_epoch(103, 0)
    with pytest.raises(ValueError, match="larger than the number of examples"):
        data.steps_per_epoch(103, 104)


def test_load_split_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="name must be one of .*'cifar10'.*'mnist'"):
        data.load_split("mnits", "test", data_dir=tmp_path)
    with pytest.raises(ValueError, match="split 'validation' is unknown for dataset 'mnist'"):
        data.load_split("mnist", "validation", data_dir=tmp_path)
    with pytest.raises(ValueError, match="split must be a non-empty string"):
        data.load_split("mnist", "", data_dir=tmp_path)
    with pytest.raises(TypeError, match="data_dir must be a path"):
        data.load_split("mnist", "test", data_dir=3)
