"""From spike counts back to activity, and what counts as a spike event."""

from __future__ import annotations

import torch


def decode(counts: torch.Tensor, theta: torch.Tensor, timesteps: int) -> torch.Tensor:
    """Decoded activity: count * theta / T (in that order of operations)."""
    return counts * theta / timesteps


def spike_events(counts: torch.Tensor, coding: str, timesteps: int) -> torch.Tensor:
    """Spikes per neuron; in graded coding one graded spike per step while the current is positive."""
    return (counts > 0).to(counts.dtype) * timesteps if coding == "graded" else counts
