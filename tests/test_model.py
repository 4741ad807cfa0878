"""The dense BDH model: parallel, chunked and recurrent forms agree; RoPE; generate; config."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bdh_spiking.errors import BDHError, ConfigError
from bdh_spiking.model import BDH, BDHConfig, causal_linear_attention, rope_cos_sin, rope_frequencies

from conftest import make_model

F64_TOL = 1e-5
F32_TOL = 1e-4


def rel_err(ref: torch.Tensor, other: torch.Tensor) -> float:
    """max|Δlogit| / max|logit|."""
    assert ref.shape == other.shape
    assert torch.isfinite(ref).all() and torch.isfinite(other).all()
    return float((ref - other).abs().max() / ref.abs().max())


def tokens(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(256, (batch, length), generator=torch.Generator().manual_seed(seed))


# Small, valid configurations: (n_layer, n_embd, n_head, multiplier).
configs = st.tuples(
    st.integers(1, 2),
    st.sampled_from([16, 32]),
    st.sampled_from([1, 2, 4]),
    st.sampled_from([2, 4]),
).filter(lambda c: c[1] % c[2] == 0)


def build(cfg, seed, dtype):
    n_layer, n_embd, n_head, mult = cfg
    model = make_model(seed=seed, n_layer=n_layer, n_embd=n_embd, n_head=n_head,
                       mlp_internal_dim_multiplier=mult)
    return model.to(dtype)


# -- parallel vs recurrent ---------------------------------------------------------------
@pytest.mark.parametrize("cfg", [(2, 32, 2, 4), (1, 16, 2, 2)])
def test_recurrent_matches_parallel_float64_512_tokens(cfg):
    model = build(cfg, seed=3, dtype=torch.float64)
    idx = tokens(1, 512)
    with torch.no_grad():
        par, _ = model(idx)
        rec, _ = model.forward_recurrent(idx)
    assert par.dtype == rec.dtype == torch.float64
    assert par.shape == (1, 512, 256)
    # the test is only meaningful if the logits are not trivially small
    assert par.abs().max() > 1.0
    assert rel_err(par, rec) < F64_TOL


def test_float64_forms_agree_to_rounding():
    """In float64 both forms share the float32 RoPE phases bit for bit, so they agree to float64
    rounding; a form computing its phases any other way (e.g. in float64) is off by ~1e-6 here,
    which the 1e-5 acceptance tolerance alone would not notice."""
    model = build((2, 32, 2, 4), seed=3, dtype=torch.float64)
    idx = tokens(1, 512)
    with torch.no_grad():
        par, _ = model(idx)
        rec, _ = model.forward_recurrent(idx)
        chunked, _ = model(idx, chunk=50)
    assert rel_err(par, rec) < 1e-11
    assert rel_err(par, chunked) < 1e-11


def test_recurrent_matches_parallel_float32_512_tokens():
    model = build((2, 32, 2, 4), seed=4, dtype=torch.float32)
    idx = tokens(1, 512, seed=2)
    with torch.no_grad():
        par, _ = model(idx)
        rec, _ = model.forward_recurrent(idx)
    assert par.dtype == rec.dtype == torch.float32
    assert rel_err(par, rec) < F32_TOL


@settings(max_examples=5, deadline=None, derandomize=True)
@given(cfg=configs, seed=st.integers(0, 1000), length=st.integers(1, 48),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_recurrent_matches_parallel_random_configs(cfg, seed, length, dtype):
    model = build(cfg, seed, dtype)
    idx = tokens(2, length, seed=seed)
    targets = tokens(2, length, seed=seed + 1)
    with torch.no_grad():
        par, par_loss = model(idx, targets)
        rec, rec_loss = model.forward_recurrent(idx, targets)
    tol = F64_TOL if dtype == torch.float64 else F32_TOL
    assert rel_err(par, rec) < tol
    assert abs(float(par_loss) - float(rec_loss)) < tol * max(1.0, abs(float(par_loss)))


def test_recurrent_form_is_causal(tiny_model):
    """Changing a later token must not change any earlier logit (in either form)."""
    model = tiny_model.double()
    idx = tokens(1, 24)
    changed = idx.clone()
    changed[0, 15] = (changed[0, 15] + 1) % 256
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(changed)
        ra, _ = model.forward_recurrent(idx)
        rb, _ = model.forward_recurrent(changed)
    assert torch.equal(a[:, :15], b[:, :15])
    assert torch.equal(ra[:, :15], rb[:, :15])
    # ... while the changed token does matter from its own position on
    assert not torch.allclose(a[:, 15:], b[:, 15:])
    assert not torch.allclose(ra[:, 15:], rb[:, 15:])


# -- chunked attention -------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [1, 7, 64, 128, 1000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_chunked_forward_matches_unchunked(chunk, dtype):
    model = build((2, 32, 2, 4), seed=5, dtype=dtype)
    idx = tokens(2, 100 if chunk != 128 else 512)  # 100 is not a multiple of 7 or 64
    with torch.no_grad():
        full, _ = model(idx)
        chunked, _ = model(idx, chunk=chunk)
    tol = F64_TOL if dtype == torch.float64 else F32_TOL
    assert rel_err(full, chunked) < tol


@settings(max_examples=5, deadline=None, derandomize=True)
@given(cfg=configs, seed=st.integers(0, 1000), length=st.integers(2, 64), chunk=st.integers(1, 20))
def test_chunked_forward_random_configs(cfg, seed, length, chunk):
    model = build(cfg, seed, torch.float64)
    idx = tokens(1, length, seed=seed)
    with torch.no_grad():
        full, _ = model(idx)
        chunked, _ = model(idx, chunk=chunk)
    assert rel_err(full, chunked) < F64_TOL


def test_causal_linear_attention_definition():
    """sum_{s<t} (q_t . q_s) v_s written out as a loop, against both the full and chunked forms."""
    gen = torch.Generator().manual_seed(7)
    q = torch.randn(1, 2, 9, 6, generator=gen, dtype=torch.float64)
    v = torch.randn(1, 1, 9, 4, generator=gen, dtype=torch.float64)
    expected = torch.zeros(1, 2, 9, 4, dtype=torch.float64)
    for t in range(9):
        for s in range(t):
            expected[:, :, t] += (q[:, :, t] * q[:, :, s]).sum(-1, keepdim=True) * v[:, :, s]
    assert torch.allclose(causal_linear_attention(q, v), expected, rtol=1e-12, atol=1e-12)
    for chunk in (1, 2, 4, 9):
        assert torch.allclose(causal_linear_attention(q, v, chunk), expected, rtol=1e-12, atol=1e-12)
    assert torch.all(expected[:, :, 0] == 0)  # strictly causal: the first position sees nothing


# -- RoPE ----------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 8, 64, 256])
def test_rope_frequencies_equal_within_pairs(n):
    f = rope_frequencies(n)
    assert f.dtype == torch.float32
    assert f.shape == (n,)
    assert torch.equal(f[0::2], f[1::2])
    assert f[0].item() == pytest.approx(1 / (2 * math.pi), rel=1e-6)
    # strictly decreasing from one pair to the next
    pairs = f[0::2]
    assert torch.all(pairs[1:] < pairs[:-1])


def test_rope_cos_sin_uses_float32_phases():
    n = 64
    freqs = rope_frequencies(n)
    pos = torch.arange(600)
    cos, sin = rope_cos_sin(freqs, pos)
    assert cos.dtype == sin.dtype == torch.float32
    assert cos.shape == sin.shape == (600, n)
    phases = ((pos.to(torch.float32).view(-1, 1) * freqs) % 1) * (2 * math.pi)
    assert torch.equal(cos, torch.cos(phases))
    assert torch.equal(sin, torch.sin(phases))
    # float64 frequencies holding float32 values give exactly the same float32 result
    cos64, sin64 = rope_cos_sin(freqs.double(), pos)
    assert cos64.dtype == torch.float32
    assert torch.equal(cos64, cos) and torch.equal(sin64, sin)


def test_double_model_keeps_float32_rope():
    model = make_model()
    n = model.config.n_neurons
    original = model.attn.freqs.clone()
    assert original.dtype == torch.float32
    pos = torch.arange(50)
    cos32, sin32 = model.attn.cos_sin(pos)
    model.double()
    assert model.encoder.dtype == torch.float64
    # .double() casts the buffer, but the float32 values round-trip exactly
    assert torch.equal(model.attn.freqs.to(torch.float32), original)
    assert torch.equal(original.view(-1), rope_frequencies(n))
    cos64, sin64 = model.attn.cos_sin(pos)
    assert cos64.dtype == sin64.dtype == torch.float32
    assert torch.equal(cos64, cos32) and torch.equal(sin64, sin32)


def test_float64_logits_track_float32_logits():
    """Both precisions use the same phases, so the float64 model is a tighter version of float32."""
    model = make_model(seed=9)
    idx = tokens(1, 128)
    with torch.no_grad():
        l32, _ = model(idx)
        l64, _ = model.double()(idx)
    assert rel_err(l64, l32.double()) < F32_TOL


# -- generate ------------------------------------------------------------------------------
def test_generate_shape_and_reproducibility(tiny_model):
    prompt = tokens(3, 5)
    a = tiny_model.generate(prompt, 12, generator=torch.Generator().manual_seed(42))
    b = tiny_model.generate(prompt, 12, generator=torch.Generator().manual_seed(42))
    assert a.shape == (3, 17)
    assert a.dtype == torch.int64
    assert torch.equal(a[:, :5], prompt)
    assert torch.equal(a, b)
    assert int(a.min()) >= 0 and int(a.max()) < 256
    c = tiny_model.generate(prompt, 12, temperature=0.7, top_k=5,
                            generator=torch.Generator().manual_seed(42))
    d = tiny_model.generate(prompt, 12, temperature=0.7, top_k=5,
                            generator=torch.Generator().manual_seed(42))
    assert c.shape == (3, 17) and torch.equal(c, d)


def test_generate_greedy_follows_parallel_argmax(tiny_model):
    model = tiny_model.double()
    prompt = tokens(2, 6)
    out = model.generate(prompt, 10, top_k=1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, _ = model(out[:, :-1])
    assert torch.equal(logits[:, 5:].argmax(-1), out[:, 6:])


def test_generate_zero_new_tokens(tiny_model):
    prompt = tokens(1, 4)
    assert torch.equal(tiny_model.generate(prompt, 0), prompt)


# -- config --------------------------------------------------------------------------------
def test_config_rejects_heads_not_dividing_embedding():
    with pytest.raises(ConfigError, match="not divisible"):
        BDHConfig(n_embd=30, n_head=4).validate()
    with pytest.raises(ConfigError):
        BDH(BDHConfig(n_layer=1, n_embd=30, n_head=4, mlp_internal_dim_multiplier=2))
    assert issubclass(ConfigError, BDHError)


@pytest.mark.parametrize("field,value", [("n_layer", 0), ("n_embd", -4), ("n_head", 1.5),
                                         ("vocab_size", 0), ("dropout", 1.0)])
def test_config_rejects_bad_fields(field, value):
    cfg = BDHConfig(n_layer=1, n_embd=16, n_head=2, mlp_internal_dim_multiplier=2)
    setattr(cfg, field, value)
    with pytest.raises(ConfigError):
        cfg.validate()


def test_config_valid_roundtrip():
    cfg = BDHConfig(n_layer=1, n_embd=16, n_head=2, mlp_internal_dim_multiplier=4)
    assert cfg.validate() is cfg
    assert cfg.n_neurons == 32
    assert BDHConfig(**cfg.to_dict()) == cfg
