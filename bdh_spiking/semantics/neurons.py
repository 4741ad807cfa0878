"""The IF neuron of the spiking network: its start, its step, T steps of a population.

Thresholds are folded into the weights (``weights.fold_weights``), so every neuron fires when its
membrane exceeds 1 (strictly) and the reset subtracts what was emitted. One rule per function;
every executor calls these (numpy executors on ``torch.from_numpy`` views).
"""

from __future__ import annotations

import math

import torch

from .settings import SimSettings


def initial_membrane(coding: str, v_init: float) -> float:
    """The membrane at every token start: v_init (in threshold units), 0 for graded coding."""
    return 0.0 if coding == "graded" else float(v_init)


def firing_boundary(coding: str) -> float:
    """The boundary a silent neuron must cross: 1 for spikes, 0 (silent <-> sending) for graded."""
    return 0.0 if coding == "graded" else 1.0


def boundary_distance(v: torch.Tensor, coding: str, max_spikes: int = 1) -> torch.Tensor:
    """Distance of the integrated (pre-reset) membrane v to the nearest firing boundary."""
    if coding == "rate":
        return (v - 1.0).abs()
    if coding == "multispike":
        return (v - torch.clamp(torch.round(v), min=1.0, max=float(max_spikes))).abs()
    if coding == "graded":
        return v.abs()
    raise ValueError(f"unknown coding {coding!r}")


def neuron_step_(v: torch.Tensor, current: torch.Tensor, coding: str, max_spikes: int = 1, margin: bool = True):
    """One timestep updating v in place: integrate, fire, reset. Returns (s, distance or None).

    rate:       v += I; s = 1 if v > 1 else 0; v -= s
    multispike: v += I; s = clamp(ceil(v) - 1, 0, K); v -= s   (s = number of integers 1 <= j <= K below v)
    graded:     v += I; s = max(v, 0) (one graded spike carrying that payload); v = 0
    distance: of v from the nearest firing boundary after integration (``boundary_distance``).
    """
    v.add_(current)
    dist = boundary_distance(v, coding, max_spikes) if margin else None
    if coding == "rate":
        s = (v > 1.0).to(v.dtype)
        v.sub_(s)
    elif coding == "multispike":
        s = torch.ceil(v).sub_(1.0).clamp_(min=0.0, max=float(max_spikes))
        v.sub_(s)
    elif coding == "graded":
        s = torch.clamp(v, min=0.0)
        v.zero_()
    else:
        raise ValueError(f"unknown coding {coding!r}")
    return s, dist


def neuron_step(v: torch.Tensor, current: torch.Tensor, coding: str, max_spikes: int = 1, margin: bool = True):
    """``neuron_step_`` on a copy of v: returns (v, s, distance)."""
    v = v.clone()
    s, dist = neuron_step_(v, current, coding, max_spikes, margin)
    return v, s, dist


def run_population(current: torch.Tensor, settings: SimSettings, v_init: float, margins: bool = True):
    """T timesteps of constant input current (threshold units) from ``initial_membrane``.

    Returns (counts, margin): counts summed over the T steps (spikes, or graded payload), and the
    smallest distance to a firing boundary seen at any step (None when margins=False).

    Only neurons with a positive current are stepped: with v_init < 1 a neuron whose current is
    <= 0 never reaches a boundary (its count is 0 and its membrane stays <= v_init), so skipping
    it changes no count, and the stepped neurons see exactly the loop written out.
    """
    flat = current.reshape(-1)
    idx = (flat > 0).nonzero().squeeze(1)
    v0 = initial_membrane(settings.coding, v_init)
    j = flat[idx]
    v = torch.full_like(j, v0)
    c = torch.zeros_like(j)
    m = torch.full_like(j, math.inf) if margins else None
    for _ in range(settings.timesteps):
        s, dist = neuron_step_(v, j, settings.coding, settings.max_spikes, margins)
        c += s
        if margins:
            torch.minimum(m, dist, out=m)
    counts = torch.zeros_like(flat)
    counts[idx] = c
    margin = None
    if margins:
        # silent neurons: distance to the boundary after the first step (their closest approach)
        margin = ((v0 + flat) - firing_boundary(settings.coding)).abs()
        margin[idx] = m
        margin = margin.view_as(current)
    return counts.view_as(current), margin
