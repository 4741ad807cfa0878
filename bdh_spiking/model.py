"""The dense BDH-GPU language model (Kosowski et al. 2025), in two equivalent forms.

* ``BDH.forward`` is the parallel form: the same computation as the official ``bdh.py``
  (same parameter names and shapes, so official state dicts load unchanged), with an
  optional chunked attention whose memory does not grow with the sequence length.
* ``BDH.forward_recurrent`` processes one token at a time with an explicit per-layer,
  per-head Hebbian state; it is the bridge to the spiking network (docs/recurrent-form.md).

RoPE phases are always the official float32 ``t * freqs`` values, whatever dtype the
activations use: the official attention asserts float32 frequencies, and recomputing the
phases any other way moves logits by ~1e-5 over a few hundred tokens.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

ROPE_THETA = 2.0**16


@dataclasses.dataclass
class BDHConfig:
    n_layer: int = 6
    n_embd: int = 256
    dropout: float = 0.1
    n_head: int = 4
    mlp_internal_dim_multiplier: int = 128
    vocab_size: int = 256

    @property
    def n_neurons(self) -> int:
        """Neurons per head (N in the official code)."""
        return self.mlp_internal_dim_multiplier * self.n_embd // self.n_head

    def validate(self) -> "BDHConfig":
        from .errors import ConfigError

        for name in ("n_layer", "n_embd", "n_head", "mlp_internal_dim_multiplier", "vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"config field {name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"embedding dim {self.n_embd} is not divisible by the number of heads {self.n_head}"
            )
        if (self.mlp_internal_dim_multiplier * self.n_embd) % self.n_head:
            raise ConfigError("mlp_internal_dim_multiplier * n_embd must be divisible by n_head")
        if self.n_neurons % 2:
            raise ConfigError(f"neurons per head must be even for RoPE pairs, got {self.n_neurons}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def rope_frequencies(n: int) -> torch.Tensor:
    """The official float32 frequency table (cycles per token), equal within a neuron pair."""
    pair_index = torch.floor(torch.arange(0, n, dtype=torch.float32) / 2) * 2
    return 1.0 / (ROPE_THETA ** (pair_index / n)) / (2 * math.pi)


def rope_cos_sin(freqs: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of the official float32 phases ``(t * freqs) % 1`` for each position t.

    freqs: (N,) float32 (values that were float32 and were cast are restored exactly);
    positions: (T,) integer. Returns two float32 tensors of shape (T, N).
    """
    f32 = freqs.reshape(-1).to(torch.float32)
    phases = positions.to(device=f32.device, dtype=torch.float32).view(-1, 1) * f32
    phases = (phases % 1) * (2 * math.pi)
    return torch.cos(phases), torch.sin(phases)


def rotate_pairs(v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on neuron pairs (2k, 2k+1): a rotation by each pair's phase.

    Products are taken in v's dtype (float32 cos/sin promote exactly), as the official code does.
    """
    v_rot = torch.stack((-v[..., 1::2], v[..., ::2]), dim=-1).view(*v.shape)
    return (v * cos).to(v.dtype) + (v_rot * sin).to(v.dtype)


def causal_linear_attention(q: torch.Tensor, v: torch.Tensor, chunk: int | None = None,
                            writes: torch.Tensor | None = None) -> torch.Tensor:
    """sum_{s<t} (q_t . q_s) v_s, strictly causal, for q (B,H,T,N) and v (B,1|H,T,D).

    chunk=None computes the full (T,T) score matrix as the official code does; a chunk size
    carries the Hebbian state S = sum_s q_s v_s^T between chunks so memory is O(chunk^2 + N*D).
    writes (B,T) or (T,) 0/1, optional: token s writes its q_s v_s^T only where writes[s] is 1
    (reads continue): the dense counterpart of the plastic switch ``freeze_after``.
    """
    T = q.shape[-2]
    if writes is not None:
        v = v * writes.to(v.dtype).reshape(*([1] * (v.dim() - 2)), T, 1) if writes.dim() == 1 else \
            v * writes.to(v.dtype)[:, None, :, None]
    if chunk is None or chunk >= T:
        return (q @ q.mT).tril(diagonal=-1) @ v
    B, H, _, N = q.shape
    D = v.shape[-1]
    state = q.new_zeros(B, H, N, D)
    outs = []
    for start in range(0, T, chunk):
        qc = q[..., start : start + chunk, :]
        vc = v[..., start : start + chunk, :]
        outs.append((qc @ qc.mT).tril(diagonal=-1) @ vc + qc @ state)
        state = state + qc.mT @ vc
    return torch.cat(outs, dim=-2)


def layer_norm(x: torch.Tensor) -> torch.Tensor:
    """LayerNorm without affine parameters, eps as in torch's default (the official model's)."""
    return F.layer_norm(x, (x.shape[-1],))


class Attention(nn.Module):
    """Holds the RoPE frequency buffer under the official name ``attn.freqs``."""

    def __init__(self, config: BDHConfig):
        super().__init__()
        n = config.n_neurons
        self.register_buffer("freqs", rope_frequencies(n).view(1, 1, 1, n))

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return rope_cos_sin(self.freqs, positions)


class BDH(nn.Module):
    def __init__(self, config: BDHConfig):
        super().__init__()
        config.validate()
        self.config = config
        nh, D, N = config.n_head, config.n_embd, config.n_neurons
        self.decoder = nn.Parameter(torch.zeros((nh * N, D)).normal_(std=0.02))
        self.encoder = nn.Parameter(torch.zeros((nh, D, N)).normal_(std=0.02))
        self.attn = Attention(config)
        self.embed = nn.Embedding(config.vocab_size, D)
        nn.init.normal_(self.embed.weight, mean=0.0, std=0.02)
        self.drop = nn.Dropout(config.dropout)
        self.encoder_v = nn.Parameter(torch.zeros((nh, D, N)).normal_(std=0.02))
        self.lm_head = nn.Parameter(torch.zeros((D, config.vocab_size)).normal_(std=0.02))
        # None: ReLU, as the official model; semantics.activation.replaced() installs another
        self.activation = None
        # None: the official payload, attention and LayerNorm; semantics.bio_forms installs others
        self.forms = None

    # -- parallel form ----------------------------------------------------------------
    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, chunk: int | None = None,
                probe=None, writes: torch.Tensor | None = None):
        """Returns (logits, loss) exactly as the official BDH.forward does.

        probe(layer, x, x_current, y_current), if given, sees each layer's input x (B,1,T,D) and
        pre-ReLU currents x E and LN(yKV) E_v (B,nh,T,N): calibration and reports read them.
        ``self.activation`` (semantics.activation) replaces the two ReLUs when set. writes (B,T)
        or (T,), optional: which tokens write their Hebbian increment (causal_linear_attention).
        """
        act = self.activation
        C = self.config
        B, T = idx.shape
        nh, N = C.n_head, C.n_neurons
        x = layer_norm(self.embed(idx).unsqueeze(1))  # B,1,T,D
        cos, sin = self.attn.cos_sin(torch.arange(T, device=idx.device))
        for layer in range(C.n_layer):
            x_current = x @ self.encoder  # B,nh,T,N
            a = F.relu(x_current) if act is None else act.x(layer, x_current)
            forms = getattr(self, "forms", None)
            if forms is None:
                q = rotate_pairs(a, cos, sin)
                y_kv = layer_norm(causal_linear_attention(q, x, chunk, writes))
            else:
                q = forms.payload_of(a, cos, sin)
                y_kv = forms.norm(forms.attention(q, x, chunk, writes))
            y_current = y_kv @ self.encoder_v
            if probe is not None:
                probe(layer, x, x_current, y_current)
            b = F.relu(y_current) if act is None else act.y(layer, y_current)
            g = self.drop(a * b)
            y_mlp = g.transpose(1, 2).reshape(B, 1, T, N * nh) @ self.decoder
            x = layer_norm(x + layer_norm(y_mlp)) if forms is None else forms.norm(x + forms.norm(y_mlp))
        logits = x.view(B, T, C.n_embd) @ self.lm_head
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    # -- recurrent form ---------------------------------------------------------------
    def initial_state(self, batch: int, device=None, dtype=None) -> dict:
        """Hebbian state: per layer (B, nh, D, N) synaptic matrix, zero at sequence start."""
        C = self.config
        dtype = dtype or self.embed.weight.dtype
        device = device or self.embed.weight.device
        rho = torch.zeros(C.n_layer, batch, C.n_head, C.n_embd, C.n_neurons, device=device, dtype=dtype)
        return {"rho": rho, "t": 0}

    def step(self, token: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """One token (B,) through every layer; reads each layer's rho, then writes x ⊗ q into it."""
        C = self.config
        B = token.shape[0]
        t = state["t"]
        rho = state["rho"]
        cos, sin = self.attn.cos_sin(torch.tensor([t], device=token.device))
        x = layer_norm(self.embed(token))  # B,D
        for layer in range(C.n_layer):
            a = F.relu(torch.einsum("bd,hdn->bhn", x, self.encoder))
            q = rotate_pairs(a, cos[0], sin[0])  # B,nh,N
            y_kv = layer_norm(torch.einsum("bhdn,bhn->bhd", rho[layer], q))
            rho[layer] += x[:, None, :, None] * q[:, :, None, :]  # strictly causal: written after reading
            b = F.relu(torch.einsum("bhd,hdn->bhn", y_kv, self.encoder_v))
            g = a * b
            y_mlp = g.reshape(B, C.n_head * C.n_neurons) @ self.decoder
            x = layer_norm(x + layer_norm(y_mlp))
        state["t"] = t + 1
        return x @ self.lm_head, state

    def forward_recurrent(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """Token-by-token form of forward(); same (logits, loss) up to float rounding."""
        state = self.initial_state(idx.shape[0], idx.device)
        logits = torch.stack([self.step(idx[:, t], state)[0] for t in range(idx.shape[1])], dim=1)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample with the recurrent form: O(1) work per new byte."""
        state = self.initial_state(idx.shape[0], idx.device)
        for t in range(idx.shape[1]):
            logits, state = self.step(idx[:, t], state)
        out = [idx]
        for _ in range(max_new_tokens):
            nxt = sample_next(logits, temperature, top_k, generator)
            out.append(nxt[:, None])
            logits, state = self.step(nxt, state)
        return torch.cat(out, dim=1)


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """One sampled byte per row of logits (B,V)."""
    logits = logits.float() / max(temperature, 1e-8)
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)
