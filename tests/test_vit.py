"""The ViT of SPEC §3 (SPT + LSA) and its head / MLP-unit partition; tiny models, CPU, seconds."""

from __future__ import annotations

import pytest
import torch

from rem.models import build_model, expand, param_count, shrink
from rem.models.vit import ShiftedPatchTokens, ViT, vit

TINY = {"num_classes": 5, "dim": 32, "depth": 2, "heads": 4, "head_dim": 8, "mlp": 48}


def tiny(capacity: float = 0.0, seed: int = 0) -> ViT:
    torch.manual_seed(seed)
    return vit(capacity=capacity, **TINY).eval()


def images(n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_forward_shapes_and_groups():
    m = tiny()
    assert m.kept == [4, 48, 4, 48] and m.extra == [0, 0, 0, 0]
    assert m(images()).shape == (3, 5)
    assert m.features(images()).shape == (3, 32)
    m16 = vit(image_size=16, patch=4, **TINY).eval()
    assert m16(torch.randn(2, 3, 16, 16)).shape == (2, 5)
    half = tiny(capacity=0.5)
    assert half.kept == [2, 24, 2, 24] and half.extra == [2, 24, 2, 24]
    assert half.blocks[0].attn.q.weight.shape == (4 * 8, 32)
    assert half.blocks[0].mlp.fc1.weight.shape == (48, 32)


def test_spt_shifts_are_diagonal_half_patch():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 4, 4] = 1.0
    s = ShiftedPatchTokens.shifted(x, 2)
    assert s.shape == (1, 5, 8, 8)
    where = [tuple(torch.nonzero(s[0, c]).tolist()[0]) for c in range(5)]
    assert where == [(4, 4), (2, 2), (2, 6), (6, 2), (6, 6)]


def test_lsa_init_and_no_self_attention():
    m = tiny()
    attn = m.blocks[0].attn
    assert torch.isclose(attn.log_scale.exp(), torch.tensor(8**-0.5))
    # a value that only token 0 carries cannot reach token 0's output: attention excludes the diagonal
    x = torch.zeros(1, 3, 32)
    with torch.no_grad():
        attn.q.weight.zero_()
        attn.k.weight.zero_()
        attn.v.weight.copy_(torch.eye(32))
        attn.out.weight.copy_(torch.eye(32))
        attn.out.bias.zero_()
    x[0, 0, 0] = 1.0
    y = attn(x, 4, "full", None)
    assert y[0, 0, 0] == 0 and torch.allclose(y[0, 1:, 0], torch.full((2,), 0.5))


@pytest.mark.parametrize("ratio, extra_heads", [(0.25, 1), (0.5, 2), (1.0, 4)])
def test_expand_drop_equals_original_and_shrink_restores(ratio, extra_heads):
    m = tiny()
    x = images()
    with torch.no_grad():
        ref = m(x)
        big = expand(m, ratio, seed=3).eval()
        assert big.extra == [extra_heads, round(48 * ratio)] * 2
        assert param_count(big) > param_count(m)
        torch.testing.assert_close(big(x, mode="drop"), ref, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(big(x, mode="full"), ref, atol=1e-4)
        small = shrink(big).eval()
        assert param_count(small) == param_count(m) and small.extra == [0, 0, 0, 0]
        torch.testing.assert_close(small(x), ref, atol=1e-5, rtol=1e-5)


def test_drop_mode_gives_theta_o2_zero_gradient():
    m = expand(tiny(), 0.5, seed=1).train()
    m(images(), mode="drop").logsumexp(1).sum().backward()
    masks = m.extra_param_masks()
    n_extra = 0
    for name, p in m.named_parameters():
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        assert torch.all(g[masks[name]] == 0), name
        n_extra += int(masks[name].sum())
    assert n_extra > 0
    # the kept part does learn; kept = [4, 48, 4, 48], extra = [2, 24, 2, 24]; heads are 8 wide
    assert m.blocks[0].attn.q.weight.grad[: 4 * 8].abs().sum() > 0
    for name in ("pos", "cls", "head.weight", "to_tokens.proj.weight", "blocks.0.attn.log_scale"):
        assert not masks[name].any(), name
    q, out = masks["blocks.0.attn.q.weight"], masks["blocks.0.attn.out.weight"]
    assert q[4 * 8 :].all() and not q[: 4 * 8].any() and out[:, 4 * 8 :].all() and not out[:, : 4 * 8].any()
    fc1, fc2 = masks["blocks.1.mlp.fc1.weight"], masks["blocks.1.mlp.fc2.weight"]
    assert fc1[48:].all() and not fc1[:48].any() and fc2[:, 48:].all() and not fc2[:, :48].any()


def test_mask_mode_extremes_and_keys():
    m = tiny(capacity=0.5)
    x = images()
    ones = [torch.ones(3, e) for e in m.extra]
    zeros = [torch.zeros(3, e) for e in m.extra]
    with torch.no_grad():
        torch.testing.assert_close(m(x, mode="mask", masks=ones), m(x, mode="full"))
        torch.testing.assert_close(m(x, mode="mask", masks=zeros), m(x, mode="drop"))
        keyed = m(x, mode="mask", keys=torch.tensor([0, 1, 2]))
        torch.testing.assert_close(keyed, m(x, mode="mask", keys=torch.tensor([0, 1, 2])))
    assert keyed.shape == (3, 5)


def test_build_model_round_trip():
    m = tiny(capacity=0.25)
    spec = m.spec()
    assert spec["arch"] == "vit" and spec["kept"] == m.kept and spec["extra"] == m.extra
    re = build_model(spec)
    assert type(re) is ViT
    re.load_state_dict(m.state_dict(), strict=True)
    re.eval()
    with torch.no_grad():
        torch.testing.assert_close(re(images(), mode="drop"), m(images(), mode="drop"))


def test_full_size_parameter_count():
    m = vit()
    n = param_count(m)
    print(f"default ViT parameters: {n:,}")
    assert 5_000_000 < n < 20_000_000
    assert m.kept == [8, 1536] * 4 and m.to_tokens.proj.weight.shape == (512, 5 * 3 * 8 * 8)
    assert m.pos.shape == (1, 17, 512)


# --- the token-axis partition (registers) and D_f's shared mask, both partitions ---------------------


def with_registers(m: ViT, n: int, seed: int = 3) -> ViT:
    return m.with_extra(m.extra, seed=seed, registers=n).eval()


@pytest.mark.parametrize("partition", ["units", "tokens"])
def test_drop_mode_equals_the_unexpanded_model_for_both_partitions(partition):
    from rem.methods.rem import expand_tokens

    m = tiny()
    x = images()
    big = (expand(m, 1.0, seed=3) if partition == "units" else expand_tokens(m, 1.0, seed=3)).eval()
    if partition == "tokens":
        assert big.registers == m.n_tokens == 17 and big.extra == m.extra
        assert big.reg.shape == (1, 17, 32) and param_count(big) == param_count(m) + 17 * 32
    with torch.no_grad():
        ref = m(x)
        torch.testing.assert_close(big(x, mode="drop"), ref, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(big(x, mode="full"), ref, atol=1e-4)
        small = shrink(big).eval()
        assert param_count(small) == param_count(m) and not small.has_extra and small.registers == 0
        torch.testing.assert_close(small(x), ref, atol=1e-5, rtol=1e-5)
    re = build_model(big.spec())  # the registers travel with the description
    re.load_state_dict(big.state_dict(), strict=True)


@pytest.mark.parametrize("partition", ["units", "tokens"])
def test_d_f_shares_one_mask_for_both_partitions(partition):
    from rem.models import mask_keys

    m = tiny(capacity=0.5) if partition == "units" else with_registers(tiny(), 17)
    x = images(1).expand(4, -1, -1, -1)  # one image, four training indices
    shared = torch.zeros(10, dtype=torch.bool)
    shared[[2, 7]] = True  # D_f = {2, 7}
    keys = mask_keys(torch.tensor([2, 7, 3, 5]), shared)
    with torch.no_grad():
        out = m(x, mode="mask", keys=keys)
    torch.testing.assert_close(out[0], out[1])  # both of D_f go through the one shared mask
    assert not torch.allclose(out[2], out[3], atol=1e-6)  # other samples: each its own mask
    assert not torch.allclose(out[0], out[2], atol=1e-6)


def test_registers_in_mask_mode_reach_only_the_samples_that_keep_them():
    m = with_registers(tiny(), 5)
    x = images(2)
    keep = torch.tensor([[1.0, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    masks = [torch.zeros(2, 0)] * len(m.extra) + [keep]
    with torch.no_grad():
        none = m(x, mode="mask", masks=[torch.zeros(2, 0)] * len(m.extra) + [torch.zeros(2, 5)])
        torch.testing.assert_close(none, m(x, mode="drop"))  # no register kept: the deployed model
        all_ = m(x, mode="mask", masks=[torch.zeros(2, 0)] * len(m.extra) + [torch.ones(2, 5)])
        torch.testing.assert_close(all_, m(x, mode="full"))
    m.train()
    out = m(x, mode="mask", masks=masks)
    out[1].sum().backward()  # sample 1 keeps no register: no gradient reaches them
    assert torch.all(m.reg.grad == 0)
    m.zero_grad()
    m(x, mode="mask", masks=masks)[0].sum().backward()  # sample 0 keeps register 0 only
    assert m.reg.grad[0, 0].abs().sum() > 0 and torch.all(m.reg.grad[0, 1:] == 0)
    assert m.extra_param_masks()["reg"].all()  # the registers are all θ_o2
    with pytest.raises(Exception, match="the last one for the registers"):
        m(x, mode="mask", masks=[torch.zeros(2, 0)] * len(m.extra))


def test_cpu_vit_profile_builds_the_paper_token_count_at_16_pixels():
    from rem.profiles import get_profile
    from rem.train import pretrain_spec

    p = get_profile("cpu-vit")
    assert p.arch == "vit" and p.pretrain.optimizer == p.unlearn.optimizer == "adam"
    m = build_model(pretrain_spec(p.arch_spec(10), "capacity-0.5"))
    assert m.n_tokens == 17 and m.kept == [2, 192] * 4 and not m.has_extra  # half of 4 heads, 384 units
    assert m(torch.randn(2, 3, 16, 16)).shape == (2, 10)
