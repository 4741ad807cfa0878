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
def swapped(model, attribute: str, value):
    """Within the block, ``model.<attribute>`` is ``value`` (restored afterwards, also on errors)."""
    previous = getattr(model, attribute, None)
    setattr(model, attribute, value)
    try:
        yield model
    finally:
        setattr(model, attribute, previous)


def replaced(model, activation: Activation):
    """Within the block, ``model``'s forward pass uses ``activation`` for x and y."""
    return swapped(model, "activation", activation)


def spike_count(current: torch.Tensor, timesteps: int, max_spikes: int, v_init: float) -> torch.Tensor:
    """Closed form of ``neurons.run_population`` for rate/multispike coding: the count of an IF
    neuron with threshold 1, start ``v_init`` in [0, 1), constant current J for T steps, up to K
    spikes per step (K=1: rate coding).

    count = clamp(ceil(v_init + T J) - 1, 0, K T). Why: while no step is capped the membrane after
    t steps is v_init + t J minus the spikes so far and stays in (0, 1], so the total is the number
    of integers below v_init + T J (one fewer than its ceiling); a step is capped only when J > K,
    and then every step is (v > K at each step), giving K T, which the clamp also gives. J <= 0
    never fires. Differs from the stepped loop only when v_init + T J lies within float rounding
    of an integer (a near-threshold tie, ``semantics.TIE_EPS``).
    """
    return torch.clamp(torch.ceil(v_init + timesteps * current) - 1.0, min=0.0, max=float(max_spikes * timesteps))


def tie_distance(current: torch.Tensor, timesteps: int, max_spikes: int, v_init: float) -> torch.Tensor:
    """Distance of v_init + T J from the nearest integer boundary 1..K T that decides the count
    (inf where the current is so low or high that no boundary is near)."""
    z = v_init + timesteps * current
    nearest = torch.clamp(torch.round(z), min=1.0, max=float(max_spikes * timesteps))
    return (z - nearest).abs()


class _CountSTE(torch.autograd.Function):
    """Forward: ``spike_count`` of z (z = J, in threshold units). Backward: the straight-through
    gradient T inside the represented range (0 < J < K), 0 outside (clipped or silent)."""

    @staticmethod
    def forward(ctx, current, timesteps, max_spikes, v_init):
        ctx.save_for_backward(current)
        ctx.range = (timesteps, max_spikes)
        return spike_count(current, timesteps, max_spikes, v_init)

    @staticmethod
    def backward(ctx, grad):
        (current,) = ctx.saved_tensors
        timesteps, max_spikes = ctx.range
        inside = (current > 0) & (current < max_spikes)
        return grad * inside.to(grad.dtype) * timesteps, None, None, None


class SpikingQuantizer(Activation):
    """The activations the converted network computes at T timesteps with up to K spikes per step
    (rate coding: K=1), product gating: x neurons encode a = ReLU(x E) with thresholds theta_x[l],
    y neurons encode b = ReLU(LN(u) E_v) with theta_y[l] (docs/spiking-semantics.md, "One token").

    Each neuron receives J = current / theta, runs ``spike_count`` and is decoded as
    count * theta / T (``decoding.decode``'s order of operations), so the dense forward pass with
    this activation is the converted network's computation up to float rounding and ties.
    Gradients are straight-through inside [0, K theta] (zero where clipped); the thresholds are
    fixed (calibrated before fine-tuning, not trained). theta_x, theta_y: (L, H, N) tensors.
    """

    def __init__(self, theta_x: torch.Tensor, theta_y: torch.Tensor, timesteps: int, max_spikes: int,
                 v_init: float = 0.5):
        if timesteps < 1 or max_spikes < 1 or not 0.0 <= v_init < 1.0:
            raise ValueError(f"need T >= 1, K >= 1, v_init in [0, 1); got {timesteps}, {max_spikes}, {v_init}")
        self.theta = {"x": theta_x, "y": theta_y}
        self.timesteps = int(timesteps)
        self.max_spikes = int(max_spikes)
        self.v_init = float(v_init)

    def _theta(self, pop: str, layer: int, current: torch.Tensor) -> torch.Tensor:
        th = self.theta[pop][layer].to(device=current.device, dtype=current.dtype)
        return th.unsqueeze(-2)  # H,1,N against (B,H,T,N)

    def _quantize(self, pop: str, layer: int, current: torch.Tensor) -> torch.Tensor:
        theta = self._theta(pop, layer, current)
        counts = _CountSTE.apply(current / theta, self.timesteps, self.max_spikes, self.v_init)
        return counts * theta / self.timesteps

    def x(self, layer: int, current: torch.Tensor) -> torch.Tensor:
        return self._quantize("x", layer, current)

    def y(self, layer: int, current: torch.Tensor) -> torch.Tensor:
        return self._quantize("y", layer, current)

    def ties(self, pop: str, layer: int, current: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
        """Boolean mask of near-threshold ties (where the stepped network may count differently)."""
        j = current / self._theta(pop, layer, current)
        return (j > 0) & (tie_distance(j, self.timesteps, self.max_spikes, self.v_init) < eps)


def clipped_mass(current: torch.Tensor, theta: torch.Tensor, max_spikes: int) -> tuple:
    """(activation mass above the top level K theta, total activation mass) of ReLU(current);
    theta broadcasts against current. The top level a neuron can represent is K theta (K spikes
    at every one of the T steps), whatever T is."""
    pos = F.relu(current)
    over = F.relu(pos - max_spikes * theta)
    return float(over.sum()), float(pos.sum())
