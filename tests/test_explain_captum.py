"""lipxai.explain against Captum on the same small CNN (weights ported from torch), in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")

from lipxai import explain as ex  # noqa: E402

pytestmark = pytest.mark.peers

B, H, W, C_IN, CLASSES = 4, 8, 8, 2, 5
RTOL = 1e-4


def _torch_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(C_IN, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 6, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),  # flattens NCHW: (C, H, W) order
        torch.nn.Linear(6 * (H // 2) * (W // 2), CLASSES),
    )
    with torch.no_grad():  # non-zero biases so that IG is not trivially exact
        for m in model:
            if hasattr(m, "bias"):
                m.bias.normal_(0.0, 0.3)
    return model.double().eval()


def _jax_split(model):
    """The same network as JAX functions of NHWC inputs, written with lax.conv directly, split
    after the second ReLU (``model[3]``): ``(features, head)`` for lipxai.explain.grad_cam."""
    conv1, conv2, dense = model[0], model[2], model[5]
    w1, b1 = (jnp.asarray(p.detach().numpy()) for p in (conv1.weight, conv1.bias))
    w2, b2 = (jnp.asarray(p.detach().numpy()) for p in (conv2.weight, conv2.bias))
    wd, bd = (jnp.asarray(p.detach().numpy()) for p in (dense.weight, dense.bias))
    dn = ("NHWC", "OIHW", "NHWC")  # torch kernels are OIHW

    def features(x):
        h = jax.lax.conv_general_dilated(x, w1, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn)
        h = jax.nn.relu(h + b1)
        h = jax.lax.conv_general_dilated(h, w2, (2, 2), ((1, 1), (1, 1)), dimension_numbers=dn)
        return jax.nn.relu(h + b2)

    def head(x, h):
        del x
        h = jnp.transpose(h, (0, 3, 1, 2)).reshape(h.shape[0], -1)  # torch's flatten order
        return h @ wd.T + bd

    return features, head


def _jax_fn(model):
    """The same network as a JAX function of NHWC inputs."""
    features, head = _jax_split(model)
    return lambda x: head(x, features(x))


@pytest.fixture(scope="module")
def setup():
    model = _torch_model()
    rng = np.random.default_rng(0)
    x_nhwc = rng.normal(size=(B, H, W, C_IN))
    target = np.array([0, 3, 1, 4], np.int32)
    return model, x_nhwc, target


def _nchw(a):
    return torch.from_numpy(np.ascontiguousarray(np.transpose(a, (0, 3, 1, 2))))


def _nhwc(t):
    return np.transpose(t.detach().numpy(), (0, 2, 3, 1))


def _close(actual, expected):
    actual, expected = np.asarray(actual), np.asarray(expected)
    err = np.abs(actual - expected).max() / np.abs(expected).max()
    assert err < RTOL, err


def test_ported_model_same_logits(setup):
    model, x, _ = setup
    with jax.enable_x64(True):
        fn = _jax_fn(model)
        _close(fn(jnp.asarray(x)), model(_nchw(x)).detach().numpy())


def test_saliency_and_gradient_x_input(setup):
    model, x, t = setup
    with jax.enable_x64(True):
        fn = _jax_fn(model)
        xj = jnp.asarray(x)
        for absolute in (False, True):
            ours = ex.saliency(fn, xj, t, absolute=absolute)
            theirs = captum_attr.Saliency(model).attribute(
                _nchw(x).requires_grad_(), target=torch.from_numpy(t).long(), abs=absolute
            )
            _close(ours, _nhwc(theirs))
        ours = ex.gradient_x_input(fn, xj, t)
        theirs = captum_attr.InputXGradient(model).attribute(
            _nchw(x).requires_grad_(), target=torch.from_numpy(t).long()
        )
        _close(ours, _nhwc(theirs))


@pytest.mark.parametrize(
    "method",
    ["riemann_middle", "riemann_left", "gausslegendre", "riemann_right", "riemann_trapezoid"],
)
def test_integrated_gradients(setup, method):
    model, x, t = setup
    baseline = np.full_like(x, 0.1)
    with jax.enable_x64(True):
        fn = _jax_fn(model)
        ours = ex.integrated_gradients(
            fn, jnp.asarray(x), t, baseline=jnp.asarray(baseline), steps=12, method=method
        )
    theirs = captum_attr.IntegratedGradients(model).attribute(
        _nchw(x),
        baselines=_nchw(baseline),
        target=torch.from_numpy(t).long(),
        n_steps=12,
        method=method,
    )
    _close(ours, _nhwc(theirs))


@pytest.mark.parametrize(
    "nt_type,ours_fn",
    [("smoothgrad", ex.smoothgrad), ("vargrad", ex.vargrad), ("smoothgrad_sq", ex.squaregrad)],
)
def test_noise_tunnel_same_noise(setup, monkeypatch, nt_type, ours_fn):
    model, x, t = setup
    samples, sigma = 6, 0.3
    eps = np.random.default_rng(1).normal(size=(samples, B, H, W, C_IN))
    # Captum draws noise once, as torch.normal(0, stdev) of shape [B * S, C, H, W], and adds
    # it to x.repeat_interleave(S): row b * S + s is example b, sample s.
    rows = np.transpose(eps, (1, 0, 4, 2, 3)).reshape(B * samples, C_IN, H, W)
    torch_noise = torch.from_numpy(sigma * rows)

    def fake_normal(mean, std, *args, **kwargs):
        assert tuple(std.shape) == tuple(torch_noise.shape)
        return torch_noise.clone()

    monkeypatch.setattr(torch, "normal", fake_normal)
    theirs = captum_attr.NoiseTunnel(captum_attr.Saliency(model)).attribute(
        _nchw(x),
        nt_type=nt_type,
        nt_samples=samples,
        nt_samples_batch_size=samples,
        stdevs=sigma,
        target=torch.from_numpy(t).long(),
        abs=False,
    )
    with jax.enable_x64(True):
        fn = _jax_fn(model)
        ours = ours_fn(
            fn, jnp.asarray(x), t, noise=sigma, noise_samples=jnp.asarray(eps), batch_size=4
        )
    _close(ours, _nhwc(theirs))


def test_grad_cam(setup):
    """Grad-CAM of the second conv block (after its ReLU) = Captum's LayerGradCam with
    relu_attributions=True, upsampled by LayerAttribution.interpolate(..., "bilinear")
    (torch's align_corners=False, the half-pixel convention of jax.image.resize)."""
    model, x, t = setup
    target = torch.from_numpy(t).long()
    cam = captum_attr.LayerGradCam(model, model[3])
    theirs = cam.attribute(_nchw(x), target=target, relu_attributions=True)  # [B, 1, h, w]
    assert tuple(theirs.shape) == (B, 1, H // 2, W // 2)
    up = captum_attr.LayerAttribution.interpolate(theirs, (H, W), "bilinear")
    signed = cam.attribute(_nchw(x), target=target)
    theirs, up, signed = (a.detach() for a in (theirs, up, signed))
    with jax.enable_x64(True):
        split = _jax_split(model)
        xj = jnp.asarray(x)
        assert xj.dtype == jnp.float64
        ours = ex.grad_cam(split, xj, t)
        small = ex.grad_cam(split, xj, t, upsample=False)
        ours_signed = ex.grad_cam(split, xj, t, relu=False, upsample=False)
    assert np.asarray(up).max() > 0 and np.asarray(signed).min() < 0  # the ReLU matters
    _close(ours, _nhwc(up))
    _close(small, _nhwc(theirs))
    _close(ours_signed, _nhwc(signed))
