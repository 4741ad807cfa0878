"""The network's weights as every executor sees them: thresholds folded in, one dtype, one device."""

from __future__ import annotations

import torch


def fold_weights(net, device=None, dtype=torch.float64) -> dict:
    """Per-layer weights with thresholds folded in, so every spiking neuron has threshold 1.

    W_x[l, h, :, n] = E[h, :, n] / theta_x[l, h, n]   and likewise W_y with E_v and theta_y.
    Computed once here so every backend sees bit-identical weights.
    """
    def t(name):
        return torch.as_tensor(net.arrays[name], dtype=dtype, device=device)

    enc, enc_v = t("encoder"), t("encoder_v")
    return {
        "W_x": enc.unsqueeze(0) / t("theta_x").unsqueeze(2),  # L,H,D,N
        "W_y": enc_v.unsqueeze(0) / t("theta_y").unsqueeze(2),  # L,H,D,N
        "theta_x": t("theta_x"),
        "theta_y": t("theta_y"),
        "embed": t("embed"),
        "decoder": t("decoder"),
        "lm_head": t("lm_head"),
        "freqs": torch.as_tensor(net.arrays["freqs"], dtype=torch.float32, device=device),
    }
