"""Dense forms of the ladder's rungs local-plasticity and divisive-norm (semantics/bio_forms.py) and
the BDH.forms hook: bit-identical by default, and each form what its equation says."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bdh_spiking.errors import ConfigError
from bdh_spiking.model import BDH, BDHConfig, causal_linear_attention
from bdh_spiking.semantics.bio_forms import (BioForms, bounded_decaying_attention, divisive_norm, local_payload,
                                             replaced_forms)


def _model():
    torch.manual_seed(0)
    model = BDH(BDHConfig(n_layer=2, n_embd=16, n_head=2, mlp_internal_dim_multiplier=4, dropout=0.0))
    for p in model.parameters():
        p.data.normal_(std=0.3)
    return model.eval()


def test_forms_hook_is_bit_identical_by_default():
    model = _model()
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain, _ = model(ids)
        with replaced_forms(model, BioForms()):  # rotate, unbounded, no decay, LayerNorm
            same, _ = model(ids)
        with replaced_forms(model, BioForms(payload="cos", w_max=0.5, keep=0.9, norm_kind="divisive")):
            other, _ = model(ids)
        again, _ = model(ids)
    assert model.forms is None
    assert torch.equal(plain, same) and torch.equal(plain, again)
    assert not torch.allclose(plain, other)


def test_attention_decay_and_bound():
    """Unbounded: u_t = sum_{s<t} keep^(t-s) (q_t . q_s) v_s (keep 1: the official attention);
    bounded: the same recursion with the state clipped, so no state entry exceeds w_max."""
    g = torch.Generator().manual_seed(2)
    q, v = torch.rand(1, 2, 7, 6, generator=g, dtype=torch.float64), torch.randn(1, 1, 7, 5, generator=g,
                                                                                 dtype=torch.float64)
    torch.testing.assert_close(bounded_decaying_attention(q, v, math.inf, 1.0), causal_linear_attention(q, v))
    keep = 0.8
    t = torch.arange(7.0, dtype=torch.float64)
    decay = (keep ** (t[:, None] - t[None, :])).tril(diagonal=-1)
    torch.testing.assert_close(bounded_decaying_attention(q, v, math.inf, keep), ((q @ q.mT) * decay) @ v)
    state = torch.zeros(1, 2, 6, 5, dtype=torch.float64)
    for s in range(7):
        state = (keep * state + q[:, :, s, :, None] * v[:, :, s, None, :]).clamp(-0.3, 0.3)
    last = bounded_decaying_attention(torch.cat([q, q[:, :, -1:]], 2), torch.cat([v, v[:, :, -1:]], 2), 0.3, keep)
    torch.testing.assert_close(last[:, :, -1], (q[:, :, -1:] @ (keep * state))[:, :, 0])


def test_divisive_norm_and_payload():
    z = torch.tensor([[1.0, 2.0, 4.0, 9.0]], dtype=torch.float64)
    m, sd = z.mean(), ((z - z.mean()) ** 2).mean().sqrt()
    torch.testing.assert_close(divisive_norm(z, 0.5), (z - m) / (0.5 + sd))
    torch.testing.assert_close(divisive_norm(z, 0.5, subtract_mean=False), z / (0.5 + (z ** 2).mean().sqrt()))
    torch.testing.assert_close(divisive_norm(z, 1e-9), F.layer_norm(z, (4,)), atol=1e-5, rtol=1e-5)
    a, cos, sin = torch.rand(3, 4), torch.rand(3, 4), torch.rand(3, 4)
    torch.testing.assert_close(local_payload(a, cos, sin, "cos"), a * cos)
    assert local_payload(a, cos, sin, "none") is a
    for bad in (dict(payload="rot"), dict(w_max=0.0), dict(keep=1.5), dict(norm_kind="batch"), dict(sigma=0.0)):
        with pytest.raises(ConfigError):
            BioForms(**bad)


def test_rung_forms_from_the_shipped_parameters():
    from bdh_spiking.backends.brian2.params import load_params
    from bdh_spiking.semantics.bio_forms import rung_forms

    par = load_params()
    local, both = rung_forms("local-plasticity", par), rung_forms("divisive-norm", par)
    assert local.payload == par["local_payload"] and local.w_max == par["w_max"] and local.norm_kind == "layer"
    assert local.keep == pytest.approx(math.exp(-par["token_ms"] / par["tau_decay_ms"]))
    assert both.norm_kind == "divisive" and both.sigma == par["norm_sigma"] and both.payload == local.payload
    assert rung_forms("local-plasticity", dict(par, tau_decay_ms=math.inf)).keep == 1.0
    with pytest.raises(ConfigError):
        rung_forms("dale", par)


def test_checkpointed_training_attention_equals_the_plain_loop_and_its_gradient():
    """With gradients the bounded state runs in checkpointed chunks (memory); values and gradients
    are the plain byte loop's, bit for bit, across a chunk boundary and with the bound binding."""
    from bdh_spiking.semantics.bio_forms import CHECKPOINT_STEPS, _advance

    gen = torch.Generator().manual_seed(0)
    T = CHECKPOINT_STEPS * 2 + 6
    q = torch.randn(2, 3, T, 8, dtype=torch.float64, generator=gen).requires_grad_()
    v = torch.randn(2, 1, T, 5, dtype=torch.float64, generator=gen).requires_grad_()
    out = bounded_decaying_attention(q, v, 1.5, 0.97)
    ref, state = _advance(q.new_zeros(2, 3, 8, 5), q, v, 0.97, 1.5)
    assert out.equal(ref) and bool((state.abs() == 1.5).any())  # the bound binds
    for a, b in zip(torch.autograd.grad(out.square().sum(), (q, v)), torch.autograd.grad(ref.square().sum(), (q, v))):
        assert a.equal(b)
    with torch.no_grad():
        assert bounded_decaying_attention(q, v, 1.5, 0.97).equal(ref)
