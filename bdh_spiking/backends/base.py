"""What every backend returns (``SimulationResult``), the per-neuron records (``Recorder``) and the
assembly of a result; the event rules themselves live in ``semantics.events``."""

from __future__ import annotations

import dataclasses
import math
import time

import torch

from ..semantics.events import EVENT_KEYS, accumulate_stats, event_counts, new_stats  # noqa: F401 (re-exported)
from .registry import RECORDABLE  # noqa: F401 (re-exported)


@dataclasses.dataclass
class SimulationResult:
    logits: torch.Tensor  # B, T, V
    stats: dict  # EVENT_KEYS -> (B, T) float64 tensors
    records: dict  # what was asked for with record=(...): counts, margins, decoded, state
    backend: str
    settings: dict
    wall_s: float
    events: dict = dataclasses.field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return int(self.logits.shape[0] * self.logits.shape[1])


def run_settings(settings, net, dtype, device, **extra) -> dict:
    """The settings a result reports: the simulation settings, gating, dtype, device and extras."""
    out = {"timesteps": settings.timesteps, "coding": settings.coding, "max_spikes": settings.max_spikes,
           "mode": settings.mode, "gating": net.gating,
           "dtype": dtype if isinstance(dtype, str) else str(dtype).replace("torch.", ""), "device": str(device)}
    out.update(extra)
    return out


def make_result(name: str, net, settings, logits, stats, records, started: float, dtype, device,
                **extra) -> SimulationResult:
    """A SimulationResult with its event totals (``semantics.events.event_counts``)."""
    result = SimulationResult(logits=logits, stats=stats, records=records, backend=name,
                              settings=run_settings(settings, net, dtype, device, **extra),
                              wall_s=time.perf_counter() - started)
    result.events = event_counts(stats, net, settings)
    return result


class Recorder:
    """Keeps only what was asked for with record=(...); per-neuron records are (B, T, L, H, N)."""

    def __init__(self, record, batch, n_tokens, dims, dtype=torch.float64):
        self.keys = set(record)
        shape = (batch, n_tokens, dims.L, dims.H, dims.N)
        self.out = {}
        if "counts" in self.keys:
            self.out["x_counts"] = torch.zeros(shape, dtype=dtype)
            self.out["y_counts"] = torch.zeros(shape, dtype=dtype)
        if "margins" in self.keys:
            self.out["x_margins"] = torch.full(shape, math.inf, dtype=dtype)
            self.out["y_margins"] = torch.full(shape, math.inf, dtype=dtype)
        if "decoded" in self.keys:
            self.out["a_hat"] = torch.zeros(shape, dtype=dtype)
            self.out["g_hat"] = torch.zeros(shape, dtype=dtype)

    def put(self, where, layer, cx, cy, mx, my, a_hat, g):
        idx = (*where, layer)
        if "counts" in self.keys:
            self.out["x_counts"][idx] = cx.cpu()
            self.out["y_counts"][idx] = cy.cpu()
        if "margins" in self.keys:
            self.out["x_margins"][idx] = mx.cpu()
            self.out["y_margins"][idx] = my.cpu()
        if "decoded" in self.keys:
            self.out["a_hat"][idx] = a_hat.cpu()
            self.out["g_hat"][idx] = g.cpu()

    def final_state(self, S):
        if "state" in self.keys:
            self.out["state"] = S.cpu()  # L,B,H,D,N fixed frame
