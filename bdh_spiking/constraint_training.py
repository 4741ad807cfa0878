"""Constraint fine-tuning (``bdh-train --init CKPT --constraints RUNG``): the thresholds, the
rung's activation the training forward uses, and what the checkpoint records.

The training forward replaces the dense x and y ReLUs by ``semantics.constraints.RungActivation``
(the activation the converted network at RUNG decodes). Thresholds are calibrated as
``bdh-convert --mode biophysical`` designs them (mse, one spike per step, design T 16) but on the
first bytes of the *training split*, recalibrated at every periodic evaluation except the last,
as spiking-aware fine-tuning does (bdh_spiking/spiking_aware.py); the checkpoint stores the
thresholds the last steps trained with, the rung's neuron and the biophysical parameters, and
``bdh-convert`` uses those thresholds instead of recalibrating. The plain (ReLU) forward is
untouched: "dense" in every report stays the checkpoint's plain forward.
"""

from __future__ import annotations

import torch

from .semantics.constraints import RungActivation, RungNeuron
from .spiking_aware import CALIBRATION_BYTES, calibrate as calibrate_quantizer

DESIGN_T = 16  # bdh-convert's --design-T default; one spike per step (mode biophysical)
DESIGN_MAX_SPIKES = 1


def calibrate(model, train_part, neuron: RungNeuron, forms=None) -> RungActivation:
    """The rung's activation with thresholds calibrated on the training split (mse at T=16, K=1),
    on the currents of the forward pass with the rung's dense forms (None: the official ones)."""
    from .semantics.bio_forms import replaced_forms

    with replaced_forms(model, forms):
        q = calibrate_quantizer(model, train_part, DESIGN_T, DESIGN_MAX_SPIKES)
    return RungActivation(neuron, q.theta["x"], q.theta["y"])


def to_meta(act: RungActivation, params: dict, calibrated_at_step: int) -> dict:
    """What the checkpoint records under ``meta['constraints']``."""
    return {"rung": act.neuron.rung, "neuron": act.neuron.to_dict(), "biophysical": dict(params),
            "design": {"timesteps": DESIGN_T, "max_spikes": DESIGN_MAX_SPIKES}, "gating": "product",
            "theta_x": act.theta["x"].detach().cpu().to(torch.float64).clone(),
            "theta_y": act.theta["y"].detach().cpu().to(torch.float64).clone(),
            "thresholds": f"mse at T={DESIGN_T}, K={DESIGN_MAX_SPIKES} on the first {CALIBRATION_BYTES} bytes of "
                          f"the training split, recalibrated during fine-tuning (last at step {calibrated_at_step})",
            "calibrated_at_step": int(calibrated_at_step)}


def from_meta(entry: dict) -> RungActivation:
    """The activation a checkpoint's ``meta['constraints']`` records."""
    return RungActivation(RungNeuron.from_dict(entry["neuron"]),
                          torch.as_tensor(entry["theta_x"], dtype=torch.float64),
                          torch.as_tensor(entry["theta_y"], dtype=torch.float64))

