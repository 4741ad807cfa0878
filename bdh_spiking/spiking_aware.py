"""Spiking-aware fine-tuning (``bdh-train --spiking-aware T``): the thresholds, the quantized
activation the training forward uses, and what the checkpoint records.

The training forward replaces the dense x and y ReLUs by ``semantics.activation.SpikingQuantizer``
(the converted network's own counts at T steps, K spikes per step, product gating). Thresholds are
calibrated, not trained: per neuron, the error-minimising threshold (``statistic='mse'``) at the
design point (T, K) on a slice of the *training split* (never the validation split, never an
evaluation text), recalibrated every ``eval_every`` steps so they follow the weights; the
checkpoint stores the thresholds the last steps were trained with and ``bdh-convert`` uses them
instead of recalibrating. The model's plain (ReLU) forward is untouched: "dense" in every report
and in the validation loss stays the checkpoint's plain forward.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from .conversion.calibration import collect_stats, thresholds
from .semantics.activation import SpikingQuantizer
from .text import to_ids

CALIBRATION_BYTES = 8192  # the slice of the training split the thresholds are calibrated on
V_INIT = 0.5
GATING = "product"


def calibrate(model, train_part: np.ndarray, timesteps: int, max_spikes: int) -> SpikingQuantizer:
    """Thresholds (mse at the design point (T, K)) from the first CALIBRATION_BYTES of the
    training split, computed on a float64 copy of the model; returns the quantizer."""
    dense = copy.deepcopy(model).to(torch.float64).eval()
    dense.attn.freqs = model.attn.freqs.to(torch.float32).clone()
    dense.activation = None
    ids = to_ids(train_part[:CALIBRATION_BYTES])
    stats = collect_stats(dense, ids, GATING, seq_len=256)
    theta_x, _ = thresholds(stats["x"], "neuron", 1.0, (timesteps, max_spikes))
    theta_y, _ = thresholds(stats["y"], "neuron", 1.0, (timesteps, max_spikes))
    return SpikingQuantizer(theta_x, theta_y, timesteps, max_spikes, V_INIT)


def from_meta(entry: dict) -> SpikingQuantizer:
    """The quantizer a checkpoint's ``meta['spiking_aware']`` records."""
    return SpikingQuantizer(torch.as_tensor(entry["theta_x"], dtype=torch.float64),
                            torch.as_tensor(entry["theta_y"], dtype=torch.float64),
                            int(entry["timesteps"]), int(entry["max_spikes"]), float(entry["v_init"]))


def to_meta(q: SpikingQuantizer, calibrated_at_step: int) -> dict:
    """What the checkpoint records: spiking-aware, T, K, v_init, gating and the thresholds."""
    return {"timesteps": q.timesteps, "max_spikes": q.max_spikes, "v_init": q.v_init, "gating": GATING,
            "coding": "rate" if q.max_spikes == 1 else "multispike",
            "theta_x": q.theta["x"].detach().cpu().to(torch.float64).clone(),
            "theta_y": q.theta["y"].detach().cpu().to(torch.float64).clone(),
            "thresholds": f"mse at T={q.timesteps}, K={q.max_spikes} on the first {CALIBRATION_BYTES} bytes "
                          f"of the training split, recalibrated during fine-tuning (last at step "
                          f"{calibrated_at_step})",
            "calibrated_at_step": int(calibrated_at_step)}
