"""Replacing the dense model's x and y activations in its forward pass: the one mechanism that
spiking-aware and constraint fine-tuning (``bdh-train``) and analyses share.

The dense BDH computes ``a = ReLU(x E)`` and ``b = ReLU(LN(S q) E_v)``. An ``Activation`` sees each
layer's pre-activation currents and returns what the forward pass uses instead; the default is
the ReLU itself, so a model without a replacement is the official model. ``replaced(model, act)``
installs one for the duration of a ``with`` block (training loops, calibration, reports).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


class Activation:
    """The dense model's own activation: ReLU for both populations. Subclass and override
    ``x``/``y`` (each gets the layer index and the pre-activation current, (B,H,T,N))."""

    def x(self, layer: int, current: torch.Tensor) -> torch.Tensor:
        return F.relu(current)

    def y(self, layer: int, current: torch.Tensor) -> torch.Tensor:
        return F.relu(current)


RELU = Activation()


@contextlib.contextmanager
def replaced(model, activation: Activation):
    """Within the block, ``model``'s forward pass uses ``activation`` for x and y."""
    previous = getattr(model, "activation", None)
    model.activation = activation
    try:
        yield model
    finally:
        model.activation = previous
