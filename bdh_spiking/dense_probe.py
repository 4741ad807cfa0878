"""The dense model's activity on a token sequence, as the spiking network's comparisons need it:
float64 logits, each layer's x and gated activations, and the final Hebbian state (fixed frame).
Read by the report, the energy model (activation densities) and the study."""

from __future__ import annotations

import copy
import dataclasses
import time

import torch
import torch.nn.functional as F

from .model import rotate_pairs


@dataclasses.dataclass
class DenseReference:
    logits: torch.Tensor  # B,T,V float64
    a: torch.Tensor  # B,T,L,H,N  ReLU(x E) per layer
    g: torch.Tensor  # B,T,L,H,N  a * ReLU(LN(yKV) E_v)
    state: torch.Tensor  # L,B,H,D,N Hebbian state after the last token (fixed frame)
    wall_s: float
    b: torch.Tensor | None = None  # B,T,L,H,N  ReLU(LN(yKV) E_v) (what product-gated y neurons encode)


def dense_reference(model, ids: torch.Tensor, chunk: int = 64) -> DenseReference:
    """Dense float64 logits, per-layer activations and final Hebbian state (fixed frame)."""
    dense = copy.deepcopy(model).to(torch.float64).eval()
    dense.attn.freqs = model.attn.freqs.to(torch.float32).clone()
    B, T = ids.shape
    a_list, g_list, b_list, states = [], [], [], []
    cos, sin = dense.attn.cos_sin(torch.arange(T))

    def probe(layer, x, x_current, y_current):
        a = F.relu(x_current)
        a_list.append(a.transpose(1, 2))
        g_list.append((a * F.relu(y_current)).transpose(1, 2))
        b_list.append(F.relu(y_current).transpose(1, 2))
        q = rotate_pairs(a, cos, sin)  # B,H,T,N
        states.append(torch.einsum("btd,bhtn->bhdn", x[:, 0], q))

    started = time.perf_counter()
    with torch.no_grad():
        logits, _ = dense(ids, chunk=chunk, probe=probe)
    wall = time.perf_counter() - started
    return DenseReference(logits, torch.stack(a_list, 2), torch.stack(g_list, 2), torch.stack(states), wall,
                          torch.stack(b_list, 2))
