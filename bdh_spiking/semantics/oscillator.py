"""The x-neuron pair oscillators: per-token float32 phases and the rotated payload q = R_t a.

The phases are the dense model's RoPE (``model.rope_cos_sin``, ``model.rotate_pairs``): one
implementation for the dense and the spiking network.
"""

from __future__ import annotations

import torch

from ..model import rope_cos_sin, rotate_pairs


def oscillator_cos_sin(freqs: torch.Tensor, positions: torch.Tensor):
    """Phases of the x-neuron pair oscillators: float32 cos/sin of ((t * freqs) % 1) * 2 pi."""
    return rope_cos_sin(freqs, positions)


def oscillator_payload(a_hat: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """q = R_t a: pair (2k, 2k+1) sends (a_2k c - a_2k+1 s, a_2k+1 c + a_2k s)."""
    return rotate_pairs(a_hat, cos, sin)


def pair_partner(a: torch.Tensor) -> torch.Tensor:
    """(-a_2k+1, a_2k) for each pair: what the partner contributes to the rotated payload."""
    return torch.stack((-a[..., 1::2], a[..., ::2]), dim=-1).reshape(a.shape)
