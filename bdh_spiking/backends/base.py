"""What every backend returns, and the event counts derived from it (shared, not re-derived)."""

from __future__ import annotations

import dataclasses
import math

import torch

from ..errors import ConfigError

# per-token statistics every executor reports, each a (B, T) tensor summed over layers/heads
EVENT_KEYS = ("x_spikes", "y_spikes", "x_active", "y_active", "active_columns", "g_nonzero")
RECORDABLE = ("counts", "margins", "decoded", "state")


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


def event_counts(stats: dict, net, settings) -> dict:
    """Totals over the run of the events that cost energy (definitions: docs/spiking-semantics.md).

    x spike: delivers its pair-rotated payload into the 2 plastic columns of its pair (2D synapses)
    and to its gate partner (1). y spike: gain gating -> D decoder synapses; product -> 1 (product
    node), whose non-zero graded outputs each drive D decoder synapses. Graded inputs: each layer's
    LayerNorm outputs drive E and E_v densely (D*H*N each). Plastic updates: D synapses per active
    column (event-driven write). Neuron updates: every IF neuron every timestep.
    """
    d = net.dims
    L, H, D, N, V = d["L"], d["H"], d["D"], d["N"], d["V"]
    total = {k: float(v.sum()) for k, v in stats.items()}
    tokens = int(next(iter(stats.values())).numel())
    y_fanout = D if net.gating == "gain" else 1
    synaptic = total["x_spikes"] * (2 * D + 1) + total["y_spikes"] * y_fanout
    graded = tokens * (L * 2 * D * H * N + D * V) + (total["g_nonzero"] * D if net.gating == "product" else 0.0)
    return {
        "tokens": tokens,
        "spikes": total["x_spikes"] + total["y_spikes"],
        "x_spikes": total["x_spikes"],
        "y_spikes": total["y_spikes"],
        "synaptic_events": synaptic,
        "graded_synaptic_events": graded,
        "plastic_updates": total["active_columns"] * D,
        "plastic_reads": total["active_columns"] * D,
        "neuron_updates": tokens * L * 2 * H * N * settings.timesteps,
        "x_active": total["x_active"],
        "y_active": total["y_active"],
        "synapses_per_layer": 3 * H * D * N + H * D * N,  # E, E_v, decoder + plastic
    }


def check_record(record) -> set:
    keys = set(record)
    unknown = keys - set(RECORDABLE)
    if unknown:
        raise ConfigError(f"cannot record {sorted(unknown)}: choose from {', '.join(RECORDABLE)}")
    return keys


def spike_events(counts: torch.Tensor, settings) -> torch.Tensor:
    """Spikes per neuron; in graded coding one graded spike per step while the current is positive."""
    return (counts > 0).to(counts.dtype) * settings.timesteps if settings.coding == "graded" else counts


def new_stats(B: int, T: int) -> dict:
    return {k: torch.zeros(B, T, dtype=torch.float64) for k in EVENT_KEYS}


def accumulate_stats(stats: dict, where, settings, cx, cy, q, g) -> None:
    """Adds one layer's per-token event statistics (counts summed over heads and neurons)."""
    dims = (-2, -1)
    stats["x_spikes"][where] += spike_events(cx, settings).sum(dims).double().cpu()
    stats["y_spikes"][where] += spike_events(cy, settings).sum(dims).double().cpu()
    stats["x_active"][where] += (cx > 0).sum(dims).double().cpu()
    stats["y_active"][where] += (cy > 0).sum(dims).double().cpu()
    stats["active_columns"][where] += (q != 0).sum(dims).double().cpu()
    stats["g_nonzero"][where] += (g != 0).sum(dims).double().cpu()


class Recorder:
    """Keeps only what was asked for with record=(...); per-neuron records are (B, T, L, H, N)."""

    def __init__(self, record, B, T, d, dtype=torch.float64):
        self.keys = check_record(record)
        shape = (B, T, d["L"], d["H"], d["N"])
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
