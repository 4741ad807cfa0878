"""Dense forms of the biophysical ladder's rungs local-plasticity and divisive-norm (issue 16): what
the dense model computes when its attention or its LayerNorm obeys the rung's constraint, for
measuring the cost to the language model itself and for constraint fine-tuning.

Installed with ``replaced_forms(model, BioForms(...))``: ``BDH.forward`` then calls the form's
``payload``, ``attention`` and ``norm`` instead of rotate_pairs, causal_linear_attention and
layer_norm (the embedding's LayerNorm stays: it is the spiking network's stimulus table). Without
an installed form the forward pass is the official one, unchanged.
Specification: docs/spiking-semantics.md, "Rung 6, `local-plasticity`" and "Rung 7, `divisive-norm`"."""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .activation import swapped

PAYLOADS = ("rotate", "cos", "none")


def local_payload(a: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kind: str) -> torch.Tensor:
    """x's payload q: "rotate" (the pair rotation, needs the partner's trace), "cos" (own trace
    times the cosine of its own phase), "none" (own trace)."""
    if kind == "rotate":
        from ..model import rotate_pairs

        return rotate_pairs(a, cos, sin)
    if kind == "cos":
        return (a * cos).to(a.dtype)
    if kind == "none":
        return a
    raise ConfigError(f"unknown payload {kind!r}: use one of {', '.join(PAYLOADS)}")


CHECKPOINT_STEPS = 32  # training: keep the state every 32 bytes, recompute the steps between in backward


def _advance(state, q, v, keep: float, w_max: float):
    """The reads of q (B,H,t,N) against the state, written by q (x) v byte by byte; (reads, state)."""
    outs = []
    for t in range(q.shape[2]):
        state = state * keep
        outs.append(q[:, :, t: t + 1] @ state)
        state = state + q[:, :, t, :, None] * v[:, :, t, None, :]
        if math.isfinite(w_max):
            state = state.clamp(-w_max, w_max)
    return torch.cat(outs, dim=-2), state


def bounded_decaying_attention(q: torch.Tensor, v: torch.Tensor, w_max: float, keep: float,
                               writes: torch.Tensor | None = None) -> torch.Tensor:
    """The read u_t = q_t (keep S_{t-1}) of a state written S_t = clip(keep S_{t-1} + q_t v_t^T,
    -w_max, w_max) (strictly causal: read before write), for q (B,H,T,N), v (B,1|H,T,D).
    keep = exp(-token_ms / tau_decay): the continuous decay over one byte. writes (T,) or (B,T) 0/1.
    With gradients the steps run in checkpointed chunks: autograd would otherwise keep every byte's
    (B,H,N,D) state (35 GB for one batch of 8 x 256 bytes of the default model)."""
    from torch.utils.checkpoint import checkpoint

    B, H, T, N = q.shape
    if writes is not None:
        w = writes.to(v.dtype)
        v = v * (w.reshape(1, 1, T, 1) if w.dim() == 1 else w[:, None, :, None])
    state = q.new_zeros(B, H, N, v.shape[-1])
    if not (torch.is_grad_enabled() and (q.requires_grad or v.requires_grad)):
        return _advance(state, q, v, keep, w_max)[0]
    outs = []
    for t0 in range(0, T, CHECKPOINT_STEPS):
        sl = slice(t0, t0 + CHECKPOINT_STEPS)
        out, state = checkpoint(_advance, state, q[:, :, sl], v[:, :, sl], keep, w_max, use_reentrant=False)
        outs.append(out)
    return torch.cat(outs, dim=-2)


def divisive_norm(z: torch.Tensor, sigma: float, subtract_mean: bool = True) -> torch.Tensor:
    """(z - M) / (sigma + P) over the last dimension: M the mean (a subtractive pool; 0 when
    subtract_mean is off), P = sqrt(mean (z - M)^2) (the divisive pool's steady state)."""
    m = z.mean(dim=-1, keepdim=True) if subtract_mean else torch.zeros_like(z[..., :1])
    # the floor (p >= 1e-6, against sigma ~0.1) keeps the gradient finite where z is all zero (sqrt'(0) = inf)
    p = ((z - m) ** 2).mean(dim=-1, keepdim=True).clamp_min(1e-12).sqrt()
    return (z - m) / (sigma + p)


@dataclasses.dataclass(frozen=True)
class BioForms:
    """The dense forms of a rung: payload ("rotate" keeps the official one), the plastic state's
    bound and decay per byte (inf and 1: the official unbounded state), the normalisation
    ("layer" or "divisive")."""

    payload: str = "rotate"
    w_max: float = math.inf
    keep: float = 1.0
    norm_kind: str = "layer"
    sigma: float = 0.1
    subtract_mean: bool = True

    def __post_init__(self):
        if self.payload not in PAYLOADS:
            raise ConfigError(f"unknown payload {self.payload!r}: use one of {', '.join(PAYLOADS)}")
        if not self.w_max > 0 or not 0.0 < self.keep <= 1.0:
            raise ConfigError("w_max must be > 0 and keep in (0, 1]")
        if self.norm_kind not in ("layer", "divisive") or not self.sigma > 0:
            raise ConfigError("norm_kind must be 'layer' or 'divisive', sigma > 0")

    def payload_of(self, a, cos, sin):
        return local_payload(a, cos, sin, self.payload)

    def attention(self, q, v, chunk=None, writes=None):
        from ..model import causal_linear_attention

        if math.isinf(self.w_max) and self.keep == 1.0:
            return causal_linear_attention(q, v, chunk, writes)
        return bounded_decaying_attention(q, v, self.w_max, self.keep, writes)

    def norm(self, z):
        if self.norm_kind == "layer":
            return F.layer_norm(z, (z.shape[-1],))
        return divisive_norm(z, self.sigma, self.subtract_mean)


def rung_forms(rung: str, par: dict) -> BioForms:
    """The dense form of rung local-plasticity or divisive-norm (cumulative: divisive-norm includes
    local-plasticity) with the biophysical parameters ``par`` (backends/brian2/params.load_params())."""
    if rung not in ("local-plasticity", "divisive-norm"):
        raise ConfigError(f"no dense form of rung {rung!r} here (local-plasticity, divisive-norm)")
    keep = math.exp(-par["token_ms"] / par["tau_decay_ms"])
    local = dict(payload=par["local_payload"], w_max=par["w_max"], keep=keep)
    if rung == "local-plasticity":
        return BioForms(**local)
    return BioForms(**local, norm_kind="divisive", sigma=par["norm_sigma"], subtract_mean=par["subtract_mean"])


def replaced_forms(model, forms: BioForms):
    """Within the block, ``model.forward`` uses ``forms`` (payload, attention, norm)."""
    return swapped(model, "forms", forms)
