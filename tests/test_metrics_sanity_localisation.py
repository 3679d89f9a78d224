"""lipxai.metrics similarity, sanity checks and localisation: known answers, properties,
batch independence, errors."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from lipxai import explain as ex
from lipxai import metrics as mx
from lipxai.metrics import sanity
from lipxai.metrics import similarity as sim

B, H, W, C, CLASSES = 4, 8, 8, 1, 3
N = H * W
_rng = np.random.default_rng(5)
A = _rng.normal(size=(B, H, W, C)).astype(np.float32)
A2 = (A + 0.7 * _rng.normal(size=A.shape)).astype(np.float32)
X = _rng.uniform(size=(B, H, W, C)).astype(np.float32)
T = np.array([0, 1, 2, 0], np.int32)
KEY = jax.random.key(11)


def close(a, b, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def one_at_a_time(f, *arrays):
    return np.concatenate([np.asarray(f(*(z[i:i + 1] for z in arrays)))
                           for i in range(arrays[0].shape[0])], axis=-1)


# ---------------------------------------------------------------------------------------
# similarity
# ---------------------------------------------------------------------------------------

SIMILARITIES = {
    "ssim": sim.ssim,
    "spearman": sim.spearman,
    "pearson": sim.pearson,
    "mse": sim.mse,
    "center_of_mass_shift": sim.center_of_mass_shift,
    "top_k_intersection": functools.partial(sim.top_k_intersection, k=7),
}


@pytest.mark.parametrize("name", sorted(SIMILARITIES))
def test_identical_attributions(name):
    f = SIMILARITIES[name]
    ideal = 0.0 if name in ("mse", "center_of_mass_shift") else 1.0
    out = np.asarray(f(A, A))
    assert out.shape == (B,)
    close(out, np.full(B, ideal), atol=1e-5)
    # and a different map is not ideal; batch independence
    other = np.asarray(f(A, A2))
    assert np.all(np.abs(other - ideal) > 1e-2), other
    close(one_at_a_time(f, A, A2), other, rtol=1e-5, atol=1e-6)


def test_correlations_and_mse_known_answers():
    for i in range(B):
        close(sim.spearman(A, A2)[i], scipy.stats.spearmanr(A[i].ravel(), A2[i].ravel())[0],
              rtol=1e-5)
        close(sim.pearson(A, A2)[i], np.corrcoef(A[i].ravel(), A2[i].ravel())[0, 1],
              rtol=1e-5)
    close(sim.mse(A, A2), ((A - A2) ** 2).reshape(B, -1).mean(1), rtol=1e-5)
    # pixels sum the channels first; elements compare every entry
    a3 = np.concatenate([A, A2], axis=-1)
    b3 = np.concatenate([A2, A], axis=-1)
    close(sim.mse(a3, b3), np.zeros(B))  # the same pixel sums
    close(sim.mse(a3, b3, features="elements"), ((A - A2) ** 2).reshape(B, -1).mean(1),
          rtol=1e-5)
    # Spearman is invariant under a monotone transform, Pearson is not
    close(sim.spearman(A, np.exp(A)), np.ones(B), atol=1e-6)
    assert np.all(np.asarray(sim.pearson(A, np.exp(A))) < 0.99)


def test_top_k_intersection_hand_built():
    a = np.array([[5.0, -4.0, 3.0, 0.1, 0.2, 0.0]], np.float32)
    b = np.array([[0.0, 4.0, 3.0, 0.1, 0.2, -9.0]], np.float32)
    # |a| top 2 = {0, 1}; |b| top 2 = {5, 1}
    close(sim.top_k_intersection(a, b, 2), [0.5])
    close(sim.top_k_intersection(a, b, 3), [2 / 3])  # {0,1,2} vs {5,1,2}
    # signed ranking: a top 2 = {0, 2}, b top 2 = {1, 2}
    close(sim.top_k_intersection(a, b, 2, absolute=False), [0.5])
    close(sim.top_k_intersection(a, b, 6), [1.0])


def test_ssim_known_answer_one_window():
    # a 1-D map of 3 values with a window of 3: a single window, the formula by hand
    a = np.array([[1.0, 2.0, 4.0]], np.float32)
    b = np.array([[1.5, 1.0, 3.0]], np.float32)
    x, y = a[0].astype(np.float64), b[0].astype(np.float64)
    r = max(x.max(), y.max()) - min(x.min(), y.min())
    c1, c2 = (0.01 * r) ** 2, (0.03 * r) ** 2
    vx, vy = x.var(ddof=1), y.var(ddof=1)
    vxy = ((x - x.mean()) * (y - y.mean())).sum() / 2
    ref = ((2 * x.mean() * y.mean() + c1) * (2 * vxy + c2)) / (
        (x.mean() ** 2 + y.mean() ** 2 + c1) * (vx + vy + c2))
    close(sim.ssim(a, b, win_size=3), [ref], rtol=1e-5)
    close(sim.ssim(a, b, win_size=3, data_range=10.0),
          [((2 * x.mean() * y.mean() + 0.01) * (2 * vxy + 0.09))
           / ((x.mean() ** 2 + y.mean() ** 2 + 0.01) * (vx + vy + 0.09))], rtol=1e-5)
    # NHWC: the channels are summed first
    a3 = np.concatenate([A, A2], axis=-1)
    close(sim.ssim(a3, np.concatenate([A2, A], axis=-1)), np.ones(B), atol=1e-5)
    close(sim.ssim(a3, a3 * 0 + A), sim.ssim(A + A2, 2 * A), rtol=1e-5)


def test_center_of_mass_shift_known_answer():
    a = np.zeros((2, H, W, 1), np.float32)
    b = np.zeros((2, H, W, 1), np.float32)
    a[0, 1, 1], b[0, 4, 5] = 2.0, -7.0  # |.|: a one-hot mass at (1,1) and at (4,5)
    a[1, 0, 0] = a[1, 0, 2] = 1.0  # centre (0, 1)
    b[1, 3, 1] = 1.0
    close(sim.center_of_mass_shift(a, b), [5.0, 3.0])


def test_similarity_under_jit():
    f = jax.jit(lambda a, b: sim.ssim(a, b) + sim.top_k_intersection(a, b, 5))
    close(f(A, A2), sim.ssim(A, A2) + sim.top_k_intersection(A, A2, 5), rtol=1e-6)


def test_similarity_errors():
    with pytest.raises(ValueError, match="same shape"):
        sim.spearman(A, A[:, :4])
    with pytest.raises(ValueError, match="k must be"):
        sim.top_k_intersection(A, A2, 0)
    with pytest.raises(ValueError, match="number of features 64"):
        sim.top_k_intersection(A, A2, N + 1)
    with pytest.raises(ValueError, match="win_size"):
        sim.ssim(A, A2, win_size=9)
    with pytest.raises(ValueError, match="win_size"):
        sim.ssim(A, A2, win_size=4)
    with pytest.raises(ValueError, match="data_range"):
        sim.ssim(A, A2, data_range=0.0)
    with pytest.raises(ValueError, match="features"):
        sim.mse(A, A2, features="channels")
    with pytest.raises(TypeError, match="floating"):
        sim.pearson(A.astype(np.int32), A2)


# ---------------------------------------------------------------------------------------
# sanity: model parameter randomisation, random logit
# ---------------------------------------------------------------------------------------


def _structured_params():
    """A conv + dense net laid out as Flax params, whose class c looks at rows band c."""
    rng = np.random.default_rng(0)
    kernel = np.zeros((3, 3, 1, 4), np.float32)
    kernel[1, 1, 0] = [1.0, 0.5, -0.5, 2.0]  # a (mostly) pointwise conv
    kernel += 0.05 * rng.normal(size=kernel.shape).astype(np.float32)
    dense = 0.01 * rng.normal(size=(H, W, 4, CLASSES)).astype(np.float32)
    for c in range(CLASSES):
        dense[2 * c + 1:2 * c + 3, 1:7, :, c] += 1.0
    return {"params": {
        "Conv_0": {"kernel": jnp.asarray(kernel), "bias": jnp.full((4,), 0.1, jnp.float32)},
        "Dense_0": {"kernel": jnp.asarray(dense.reshape(-1, CLASSES)),
                    "bias": jnp.zeros((CLASSES,), jnp.float32)},
    }}


PARAMS = _structured_params()


def apply(params, z):
    p = params["params"]
    h = jax.lax.conv_general_dilated(z, p["Conv_0"]["kernel"], (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = jax.nn.softplus(h + p["Conv_0"]["bias"])
    return h.reshape(z.shape[0], -1) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]


def explain(params, z, t):
    return ex.saliency(lambda u: apply(params, u), z, t)


def test_layer_names():
    assert mx.layer_names(PARAMS) == ("params/Conv_0", "params/Dense_0")
    assert mx.layer_names({"w": jnp.ones(2), "n": {"step": jnp.zeros((), jnp.int32)}}) == ("w",)


def test_model_randomization_drops_similarity():
    res = mx.model_randomization(explain, PARAMS, X, T, key=KEY)
    assert isinstance(res, mx.Randomization)
    assert res.layers == ("params/Dense_0", "params/Conv_0")  # top down
    assert res.scores.shape == (2, B)
    # the original saliency is structured (class c's rows band) ...
    a0 = np.abs(np.asarray(explain(PARAMS, X, T)))[..., 0]
    for i, t in enumerate(T):
        band = a0[i, 2 * t + 1:2 * t + 3, 1:7].sum()
        assert band > 0.9 * a0[i].sum()
    # ... compared with itself it scores 1; randomised, far less
    close(sim.spearman(np.abs(a0[..., None]), np.abs(a0[..., None])), np.ones(B))
    scores = np.asarray(res.scores)
    assert np.all(np.isfinite(scores))
    assert scores.mean(1).max() < 0.5, scores
    # "randomising" with the identity keeps every explanation: all ones
    same = mx.model_randomization(explain, PARAMS, X, T, key=KEY, init=lambda k, w: w)
    close(same.scores, np.ones((2, B)), atol=1e-6)


def test_model_randomization_orders_share_draws_and_batch_independence():
    top = mx.model_randomization(explain, PARAMS, X, T, key=KEY)
    bottom = mx.model_randomization(explain, PARAMS, X, T, key=KEY, order="bottom_up")
    indep = mx.model_randomization(explain, PARAMS, X, T, key=KEY, order="independent")
    assert bottom.layers == indep.layers == ("params/Conv_0", "params/Dense_0")
    # every layer gets the same draw whatever the order
    close(indep.scores[0], bottom.scores[0])
    close(bottom.scores[1], top.scores[1])  # both: everything randomised
    assert np.abs(np.asarray(indep.scores[1] - top.scores[0])).max() < 1e-5
    assert np.abs(np.asarray(indep.scores[1] - bottom.scores[1])).max() > 1e-3
    # a subset of layers; scores per example
    one = mx.model_randomization(explain, PARAMS, X, T, key=KEY, layers=["params/Dense_0"])
    assert one.layers == ("params/Dense_0",)
    close(one.scores[0], top.scores[0])
    singles = [mx.model_randomization(explain, PARAMS, X[i:i + 1], T[i:i + 1], key=KEY).scores
               for i in range(B)]
    close(np.concatenate(singles, axis=1), top.scores, rtol=1e-5, atol=1e-6)


def test_model_randomization_follows_the_computation_and_jit():
    # layer names sorted against the network's order, the network inside a jax.jit call
    rng = np.random.default_rng(2)
    params = {name: {"w": jnp.asarray(rng.normal(size=shape) / math.sqrt(shape[0]),
                                      jnp.float32)}
              for name, shape in (("a_out", (16, CLASSES)), ("m_mid", (16, 16)),
                                  ("z_in", (N, 16)))}

    @jax.jit
    def mlp(p, u):
        h = jnp.tanh(u.reshape(u.shape[0], -1) @ p["z_in"]["w"])
        h = jnp.tanh(h @ p["m_mid"]["w"])
        return h @ p["a_out"]["w"]

    def mlp_explain(p, z, t):
        return ex.saliency(lambda u: mlp(p, u), z, t)

    assert mx.layer_names(params) == ("a_out", "m_mid", "z_in")
    res = mx.model_randomization(mlp_explain, params, X, T, key=KEY, order="bottom_up")
    assert res.layers == ("z_in", "m_mid", "a_out")
    indep = mx.model_randomization(mlp_explain, params, X, T, key=KEY, order="independent",
                                   layers=["a_out", "z_in"])
    assert indep.layers == ("z_in", "a_out")
    close(indep.scores[0], res.scores[0], rtol=1e-6)  # z_in alone, the same draw
    jitted = jax.jit(lambda p, z, k: mx.model_randomization(
        mlp_explain, p, z, T, key=k, order="bottom_up").scores)(params, X, KEY)
    close(jitted, res.scores, rtol=1e-5, atol=1e-6)


def test_randomisation_keeps_the_scale():
    new = sanity._random_leaves(PARAMS, ["params/Dense_0"], KEY, None)
    kernel = new[("params", "Dense_0", "kernel")]
    old = PARAMS["params"]["Dense_0"]["kernel"]
    assert kernel.shape == old.shape and set(new) == {("params", "Dense_0", "kernel"),
                                                      ("params", "Dense_0", "bias")}
    close(jnp.std(kernel), jnp.std(old), rtol=0.1)
    assert abs(float(jnp.mean(kernel))) < 0.1 * float(jnp.std(old))
    close(new[("params", "Dense_0", "bias")], np.zeros(CLASSES))  # a zero leaf stays zero
    assert abs(float(jnp.corrcoef(kernel.ravel(), old.ravel())[0, 1])) < 0.1


def _linear_saliency(z, t):
    """The saliency of a linear model: its weight column, whatever z."""
    w = jnp.asarray(PARAMS["params"]["Dense_0"]["kernel"]).reshape(H, W, 4, CLASSES)
    return w.sum(2).transpose(2, 0, 1)[t][..., None] * jnp.ones_like(z)


def test_random_logit_known_answers():
    # two classes: the other class is 1 - t; the similarity of the two weight columns
    t2 = np.array([0, 1, 1, 0], np.int32)
    out = mx.random_logit(_linear_saliency, X, t2, key=KEY, num_classes=2, samples=4)
    a = mx._common.max_normalise(_linear_saliency(X, t2))
    b = mx._common.max_normalise(_linear_saliency(X, 1 - t2))
    close(out, sim.ssim(a, b), rtol=1e-5)
    assert np.all(np.asarray(out) < 0.5)
    # an explanation blind to the class fails the check: similarity 1
    blind = lambda z, t: z * z
    close(mx.random_logit(blind, X, T, key=KEY, num_classes=CLASSES, similarity="spearman",
                          samples=4),
          np.ones(B), atol=1e-6)


def test_random_logit_batch_and_chunk_independence():
    f = lambda z, t: explain(PARAMS, z, t)
    full = mx.random_logit(f, X, T, key=KEY, num_classes=CLASSES, samples=4)
    close(mx.random_logit(f, X, T, key=KEY, num_classes=CLASSES, samples=4, batch_size=3),
          full, rtol=1e-5)
    singles = [mx.random_logit(f, X[i:i + 1], T[i:i + 1], key=KEY, num_classes=CLASSES,
                               samples=4) for i in range(B)]
    close(np.concatenate(singles), full, rtol=1e-5)
    # the mean over 4 draws of the two other classes: a convex combination of both
    others = [sim.ssim(mx._common.max_normalise(f(X, T)),
                       mx._common.max_normalise(f(X, (T + o) % CLASSES))) for o in (1, 2)]
    lo, hi = np.minimum(*others), np.maximum(*others)
    assert np.all((np.asarray(full) >= lo - 1e-6) & (np.asarray(full) <= hi + 1e-6))


def test_sanity_errors():
    with pytest.raises(ValueError, match="order"):
        mx.model_randomization(explain, PARAMS, X, T, key=KEY, order="random")
    with pytest.raises(ValueError, match="similarity"):
        mx.model_randomization(explain, PARAMS, X, T, key=KEY, similarity="cosine")
    with pytest.raises(ValueError, match="layers"):
        mx.model_randomization(explain, PARAMS, X, T, key=KEY, layers=["Dense_0"])
    with pytest.raises(ValueError, match="no floating leaves"):
        mx.model_randomization(lambda p, z, t: z, {"n": jnp.zeros(2, jnp.int32)}, X, T,
                               key=KEY)
    with pytest.raises(ValueError, match="shape"):
        mx.model_randomization(lambda p, z, t: z[..., 0], PARAMS, X, T, key=KEY)
    with pytest.raises(ValueError, match="key"):
        mx.model_randomization(explain, PARAMS, X, T, key=None)
    with pytest.raises(ValueError, match="samples"):
        mx.random_logit(_linear_saliency, X, T, key=KEY, num_classes=3, samples=0)
    with pytest.raises(ValueError, match="num_classes"):
        mx.random_logit(_linear_saliency, X, T, key=KEY, num_classes=1)
    with pytest.raises(ValueError, match="target"):
        mx.random_logit(_linear_saliency, X, T, key=KEY, num_classes=2)  # T has a 2
    with pytest.raises(ValueError, match="ssim"):
        mx.random_logit(lambda z, t: z, X[:, :5, :5], T, key=KEY, num_classes=3)


# ---------------------------------------------------------------------------------------
# localisation
# ---------------------------------------------------------------------------------------


def _box(b=B, rows=(2, 5), cols=(3, 6)):
    m = np.zeros((b, H, W), bool)
    m[:, rows[0]:rows[1], cols[0]:cols[1]] = True
    return m


MASK = _box()


def test_pointing_game_hand_built():
    a = np.zeros((3, H, W, 1), np.float32)
    a[0, 3, 4] = 1.0  # inside the box
    a[1, 0, 7] = 1.0  # outside
    a[2, 0, 0] = a[2, 2, 3] = 1.0  # a tie, one maximum inside
    close(mx.pointing_game(a, MASK[:3]), [1.0, 0.0, 1.0])
    # a larger negative value: absolute points at it
    a[0, 7, 7] = -3.0
    close(mx.pointing_game(a, MASK[:3]), [1.0, 0.0, 1.0])
    close(mx.pointing_game(a, MASK[:3], absolute=True), [0.0, 0.0, 1.0])
    # tolerance: a max at (0, 7), at distance sqrt(8) from the box's nearest pixel (2, 5)
    b = np.zeros((1, H, W, 1), np.float32)
    b[0, 0, 7] = 1.0
    m = _box(1)
    dist = math.dist((0, 7), (2, 5))
    assert mx.pointing_game(b, m, tolerance=2)[0] == 0.0
    assert mx.pointing_game(b, m, tolerance=math.ceil(dist))[0] == 1.0


def test_mask_shapes_agree_and_batch_independence():
    a3 = np.repeat(A, 3, axis=-1) * np.array([1.0, -0.5, 2.0], np.float32)
    m3 = np.repeat(MASK[..., None], 3, axis=-1)
    m3[..., 1] = False  # a pixel is in the mask when any of its channels is
    for name, f in (("pg", mx.pointing_game), ("rm", mx.relevance_mass),
                    ("rr", mx.relevance_rank), ("al", mx.attribution_localisation),
                    ("tk", functools.partial(mx.top_k_intersection, k=6))):
        ref = np.asarray(f(a3, MASK))
        close(f(a3, MASK[..., None]), ref)
        close(f(a3, m3), ref)
        if name in ("pg", "rr", "tk"):
            close(one_at_a_time(f, a3, MASK), ref, rtol=1e-6)
        if name in ("rr", "al"):  # pixels sum the channels; one channel: elements = pixels
            close(f(np.broadcast_to(A, a3.shape), MASK), f(A, MASK), rtol=1e-5)
            close(f(A, MASK, features="elements"), f(A, MASK))


def test_relevance_mass_and_localisation_known_answers():
    a = np.full((2, H, W, 1), -1.0, np.float32)
    a[0, 2:5, 3:6] = 2.0  # all positive relevance inside
    a[1] = 1.0
    a[1, 0, 0] = 10.0  # 9 inside, 54 + 10 outside
    close(mx.relevance_mass(a, MASK[:2]), [1.0, 9 / 73], rtol=1e-6)
    # signed (Quantus): inside 18, total 18 - 55
    close(mx.relevance_mass(a, MASK[:2], positive=False)[0], 18 / (18 - 55), rtol=1e-6)
    # |a|: 18 / (18 + 55)
    close(mx.attribution_localisation(a, MASK[:2]), [18 / 73, 9 / 73], rtol=1e-6)
    close(mx.attribution_localisation(a, MASK[:2], absolute=False), [1.0, 9 / 73], rtol=1e-6)
    # a uniform attribution: the mask's share, 1 when weighted
    u = np.ones((1, H, W, 1), np.float32)
    close(mx.attribution_localisation(u, MASK[:1]), [9 / N], rtol=1e-6)
    close(mx.attribution_localisation(u, MASK[:1], weighted=True), [1.0], rtol=1e-6)


def test_rankings_known_answers():
    # the mask equal to the top-k gives 1 (top-k intersection and relevance rank)
    v = A[..., 0].reshape(B, -1)
    for k in (1, 17):
        top = np.zeros((B, N), bool)
        top[np.arange(B)[:, None], np.argsort(-v, axis=1)[:, :k]] = True
        close(mx.top_k_intersection(A, top.reshape(B, H, W), k), np.ones(B))
        close(mx.relevance_rank(A, top.reshape(B, H, W)), np.ones(B))
        close(mx.top_k_intersection(-A, top.reshape(B, H, W), k), np.zeros(B))
        close(mx.relevance_rank(-A, top.reshape(B, H, W)), np.zeros(B))
    # hand-built: the ramp 0..63 and the mask {63, 62, 59, 0}: the top 4 (63..60) hold 2
    ramp = np.arange(N, dtype=np.float32).reshape(1, H, W, 1)
    m = np.zeros((1, N), bool)
    m[0, [63, 62, 59, 0]] = True
    m = m.reshape(1, H, W)
    close(mx.relevance_rank(ramp, m), [0.5])
    close(mx.top_k_intersection(ramp, m, 4), [2 / 4])
    close(mx.top_k_intersection(ramp, m, 5), [3 / 5])


def test_human_alignment():
    h = np.abs(A2[..., 0])
    close(mx.human_alignment(A, h), sim.spearman(A, h[..., None]), rtol=1e-6)
    close(mx.human_alignment(h[..., None] ** 3, h), np.ones(B), atol=1e-6)  # monotone
    close(mx.human_alignment(h[..., None], h, measure="auc"), np.ones(B))
    close(mx.human_alignment(-h[..., None], h, measure="auc"), np.zeros(B))
    # ROC-AUC with ties: the Mann-Whitney statistic, as sklearn
    sk = pytest.importorskip("sklearn.metrics")
    a_tied = np.round(A, 0)
    auc = np.asarray(mx.human_alignment(a_tied, h, measure="auc", threshold=0.3))
    for i in range(B):
        labels = h[i].ravel() > 0.3 * h[i].max()
        close(auc[i], sk.roc_auc_score(labels, a_tied[i].ravel()), rtol=1e-5)
    close(one_at_a_time(lambda a, m: mx.human_alignment(a, m, measure="auc"), A, h),
          mx.human_alignment(A, h, measure="auc"), rtol=1e-6)


def test_localisation_under_jit():
    f = jax.jit(lambda a, m: mx.pointing_game(a, m) + mx.relevance_rank(a, m))
    close(f(A, MASK), mx.pointing_game(A, MASK) + mx.relevance_rank(A, MASK))
    empty = MASK.copy()
    empty[1] = False
    out = np.asarray(f(A, empty))  # traced: no error, NaN where undefined
    assert np.isnan(out[1]) and np.all(np.isfinite(out[[0, 2, 3]]))


def test_localisation_errors():
    with pytest.raises(ValueError, match="masks must have shape"):
        mx.pointing_game(A, MASK[:, :4])
    with pytest.raises(ValueError, match="masks must have shape"):
        mx.relevance_mass(A, MASK[:2])
    empty = MASK.copy()
    empty[2] = False
    with pytest.raises(ValueError, match=r"empty for examples \[2\]"):
        mx.relevance_rank(A, empty)
    with pytest.raises(ValueError, match="k must be"):
        mx.top_k_intersection(A, MASK, 0)
    with pytest.raises(ValueError, match="number of features"):
        mx.top_k_intersection(A, MASK, N + 1)
    with pytest.raises(ValueError, match="tolerance"):
        mx.pointing_game(A, MASK, tolerance=-1)
    with pytest.raises(ValueError, match="features"):
        mx.attribution_localisation(A, MASK, features="channels")
    with pytest.raises(ValueError, match="constant"):
        mx.human_alignment(A, np.ones((B, H, W), np.float32))
    with pytest.raises(ValueError, match="no or every"):
        mx.human_alignment(A, np.ones((B, H, W), np.float32), measure="auc")
    with pytest.raises(ValueError, match="measure"):
        mx.human_alignment(A, A2, measure="kl")
    with pytest.raises(ValueError, match="threshold"):
        mx.human_alignment(A, A2, measure="auc", threshold=1.0)
