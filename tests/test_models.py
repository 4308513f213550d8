import pytest
import torch
import torch.nn.functional as F

from rem.errors import ConfigError
from rem.models import SHARED_KEY, MaskSpec, build_model, expand, mask_keys, param_count, resnet9, shrink
from rem.models.capacity import uniform_hash


def _model(width=0.125, seed=0):
    torch.manual_seed(seed)
    m = resnet9(10, width=width)
    # non-trivial BN statistics so that eval mode exercises them
    m.train()
    with torch.no_grad():
        for _ in range(2):
            m(torch.randn(16, 3, 16, 16))
    return m.eval()


X = torch.randn(6, 3, 16, 16)


@pytest.mark.parametrize("ratio", [1 / 16, 0.25, 0.5, 1.0])
def test_expand_drop_equals_original(ratio):
    m = _model()
    e = expand(m, ratio).eval()
    assert e.has_extra and all(x >= 1 for x in e.extra)
    assert torch.allclose(m(X), e(X, mode="drop"), atol=1e-5)
    assert not torch.allclose(m(X), e(X, mode="full"), atol=1e-4)
    s = shrink(e)
    assert param_count(s) == param_count(m)
    assert torch.allclose(s(X), m(X), atol=1e-5)


def test_expand_train_mode_drop_equals_original():
    m, e = _model(), None
    e = expand(m, 1.0)
    m.train(), e.train()
    assert torch.allclose(m(X), e(X, mode="drop"), atol=1e-5)


def test_extra_params_get_no_gradient_in_drop_mode():
    e = expand(_model(), 0.5).train()
    loss = F.cross_entropy(e(X, mode="drop"), torch.arange(6) % 10)
    loss.backward()
    masks = e.extra_param_masks()
    n_extra = 0
    for name, p in e.named_parameters():
        n_extra += int(masks[name].sum())
        assert (p.grad[masks[name]] == 0).all(), name
    assert n_extra > 0
    e.zero_grad()
    F.cross_entropy(e(X, mode="full"), torch.arange(6) % 10).backward()
    assert any((p.grad[masks[n]] != 0).any() for n, p in e.named_parameters())


def test_masks_are_fixed_function_of_key_and_shared():
    spec = MaskSpec(p=0.2, seed=0)
    idx = torch.tensor([5, 7, 9, 11, 5])
    shared = torch.zeros(20, dtype=torch.bool)
    shared[[7, 11]] = True
    keys = mask_keys(idx, shared)
    assert keys.tolist() == [5, SHARED_KEY, 9, SHARED_KEY, 5]
    m1 = spec.masks(keys, [64, 32])
    m2 = spec.masks(keys.flip(0), [64, 32])  # batch order does not matter
    for a, b in zip(m1, m2):
        assert torch.equal(a, b.flip(0))
        assert torch.equal(a[1], a[3]) and torch.equal(a[0], a[4])
        assert not torch.equal(a[0], a[2])
    big = spec.masks(torch.arange(5000), [100])[0]
    assert abs(big.mean().item() - 0.2) < 0.01
    assert not torch.equal(MaskSpec(seed=1).masks(keys, [64])[0], m1[0])
    u = uniform_hash(torch.arange(10000), 8, 0, 0)
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean().item() - 0.5) < 0.01


def test_mask_mode_soft_masks_limits():
    e = expand(_model(), 0.5).eval()
    ones = [torch.ones(6, n) for n in e.extra]
    zeros = [torch.zeros(6, n) for n in e.extra]
    assert torch.allclose(e(X, mode="mask", masks=ones), e(X, mode="full"), atol=1e-6)
    assert torch.allclose(e(X, mode="mask", masks=zeros), e(X, mode="drop"), atol=1e-6)
    e.mask_spec = MaskSpec(soft=True)
    keys = torch.arange(6)
    soft = e.mask_spec.masks(keys, e.extra)
    assert ((soft[0] > 0) & (soft[0] < 1)).float().mean() > 0.9
    assert torch.allclose(e(X, mode="mask", keys=keys), e(X, mode="mask", masks=soft))
    with pytest.raises(ConfigError):
        e(X, mode="mask")
    with pytest.raises(ConfigError):
        e(X, mode="sideways")


def test_etd_model_expand_is_identity_copy():
    m = resnet9(10, width=0.125, capacity=0.5)
    assert m.has_extra
    e = expand(m, 1.0)
    assert e is not m and e.extra == m.extra
    assert torch.allclose(e.eval()(X), m.eval()(X))


def test_build_model_roundtrip_and_errors():
    m = expand(_model(), 0.25)
    r = build_model(m.spec())
    r.load_state_dict(m.state_dict())
    assert torch.allclose(r.eval()(X, mode="full"), m.eval()(X, mode="full"))
    with pytest.raises(ConfigError):
        build_model({"arch": "resnet1000"})
    with pytest.raises(ConfigError):
        expand(_model(), 10.0)


def test_residual_hidden_layers_keep_full_width():
    """SPEC §3 (as the authors): only block outputs are partitioned; the residual hidden layers stay full."""
    from rem.profiles import get_profile
    from rem.train import pretrain_spec

    spec = get_profile("cpu").arch_spec(10)
    half = build_model(pretrain_spec(spec, "capacity-0.5"))
    assert half.kept == [32, 64, 128, 64] and half.hidden == [128, 256]
    assert half.res1a.conv.in_channels == 64 and half.res1a.conv.out_channels == 128
    assert half.res1b.conv.out_channels == 64 and half.res2a.bn.num_features == 256
    e = expand(half, 1.0)
    assert e.res1a.conv.in_channels == 128 and e.res1a.conv.out_channels == 128  # hidden not widened
    assert e.res1b.conv.out_channels == 128 and e.hidden == [128, 256]
    etd = build_model(pretrain_spec(spec, "etd"))
    assert etd.hidden == [128, 256] and etd.extra == [32, 64, 128, 64]
    full = build_model(pretrain_spec(spec, "full"))
    assert full.hidden == [128, 256] and param_count(full) == 2_274_880  # the plain ResNet-9 is unchanged
    # the new input weights of the hidden layer (from extra channels) are θ_o2
    m = e.extra_param_masks()["res1a.conv.weight"]
    assert m[:, 64:].all() and not m[:, :64].any()
    assert param_count(shrink(e)) == param_count(half)


def test_hidden_layer_is_never_gated():
    from rem.models import ResNet9

    torch.manual_seed(0)
    m = ResNet9(10, kept=[4, 8, 16, 8], hidden=[16, 32]).eval()
    e = expand(m, 1.0).eval()
    assert torch.allclose(e(X, mode="drop"), m(X), atol=1e-5)
    acts = {}
    e.res1a.register_forward_hook(lambda mod, i, o: acts.__setitem__("h", o))
    e(X, mode="mask", masks=[torch.zeros(len(X), n) for n in e.extra])  # drop, at full width
    assert (acts["h"][:, m.kept[1] :].abs() > 0).any()  # hidden units beyond the kept width are live
    assert e.res1a.leading(torch.randn(2, m.kept[1], 8, 8), e.hidden[0]).shape[1] == 16  # full width in drop too


def test_drop_mode_computes_kept_slices_like_the_zero_gate():
    """An expanded model's drop mode runs the kept-only network on weight slices: same outputs, same
    gradients and the same kept batch-norm statistics as gating the extra channels to zero (a zero mask)."""
    e = expand(_model(), 1.0).train()
    z = expand(_model(), 1.0).train()
    y = torch.arange(6) % 10
    zeros = [torch.zeros(len(X), n) for n in e.extra]
    F.cross_entropy(e(X, mode="drop"), y).backward()
    F.cross_entropy(z(X, mode="mask", masks=zeros), y).backward()
    masks = e.extra_param_masks()
    for (name, p), q in zip(e.named_parameters(), z.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5, rtol=1e-4), name
        assert (p.grad[masks[name]] == 0).all(), name
    before = {n: b.clone() for n, b in expand(_model(), 1.0).named_buffers()}
    kept = {n: b.shape for n, b in shrink(e).named_buffers()}
    for (name, b), c in zip(e.named_buffers(), z.buffers()):
        lead = tuple(slice(0, s) for s in kept[name])
        assert torch.allclose(b[lead], c[lead], atol=1e-6), name  # kept channels move the same
        if "running" in name and b.shape != kept[name]:  # θ_o2's channels are left where they were
            assert torch.equal(b[kept[name][0] :], before[name][kept[name][0] :]), name
    e.eval(), z.eval()
    assert torch.allclose(e(X, mode="drop"), z(X, mode="mask", masks=zeros), atol=1e-5)
    assert e.features(X, mode="drop").shape == e.features(X, mode="full").shape
