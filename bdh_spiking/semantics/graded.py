"""The graded (non-spiking) nodes of a layer: LayerNorm, gating, the residual decoder.

gain gating:    y current = a_hat * z,  gated output g = decoded y
product gating: y current = z,          gated output g = a_hat * decoded y (a product node)
decoder:        m = g (head-major, H*N) @ Dec;  x' = LN(x + LN(m))
"""

from __future__ import annotations

import torch

from ..model import layer_norm

from ..network import GATINGS

__all__ = ["GATINGS", "layer_norm", "gate_current", "gate_output", "residual_update", "residual_from_sum"]


def gate_current(gating: str, z: torch.Tensor, a_hat: torch.Tensor) -> torch.Tensor:
    return a_hat * z if gating == "gain" else z


def gate_output(gating: str, decoded_y: torch.Tensor, a_hat: torch.Tensor) -> torch.Tensor:
    return decoded_y if gating == "gain" else a_hat * decoded_y


def residual_update(x: torch.Tensor, g: torch.Tensor, decoder: torch.Tensor) -> torch.Tensor:
    """x (..., D), g (..., H, N) -> LN(x + LN(g_flat @ decoder))."""
    return residual_from_sum(x, g.reshape(*g.shape[:-2], -1) @ decoder)


def residual_from_sum(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """x <- LN(x + LN(m)), m the decoder's sum (summed by synapses where a simulator does it)."""
    return layer_norm(x + layer_norm(m))
