"""The events a run produces, and what each event costs in synapses: the only place these rules
live (the executors' statistics, the report's firing table and the energy model read them here).

Per-token statistics every executor reports, each a (B, T) float64 tensor summed over layers,
heads and neurons: x_spikes, y_spikes (spike events, ``decoding.spike_events``), x_active,
y_active (neurons with a non-zero count), active_columns (x neurons whose rotated payload q is
non-zero: the plastic columns read and written), g_nonzero (non-zero gated outputs).
"""

from __future__ import annotations

import dataclasses

import torch

from .decoding import spike_events

EVENT_KEYS = ("x_spikes", "y_spikes", "x_active", "y_active", "active_columns", "g_nonzero")


@dataclasses.dataclass(frozen=True)
class FanOut:
    """Synapses driven by one event of each kind (dims: the network's ``Dims``; gating).

    x spike: its pair-rotated payload into the 2 plastic columns of its pair (2D synapses) and its
    gate partner (1). y spike: gain gating -> D decoder synapses; product -> 1 (the product node),
    whose non-zero graded outputs each drive D decoder synapses. Graded inputs: each layer's
    LayerNorm outputs drive E and E_v densely (D*H*N each), the last residual drives lm_head (D*V).
    Plastic: D synapses read and D written per active column (event-driven).
    """

    x_spike: int
    y_spike: int
    product_output: int  # per non-zero gated output (product gating), 0 for gain gating
    graded_encoder_per_token: int  # E and E_v of every layer
    graded_lm_head_per_token: int
    plastic_per_column: int
    out_synapses_per_layer: int  # outgoing spike synapses of the x and y neurons of one layer

    @classmethod
    def of(cls, dims, gating: str) -> "FanOut":
        L, H, D, N, V = dims.L, dims.H, dims.D, dims.N, dims.V
        gain = gating == "gain"
        y = D if gain else 1
        return cls(x_spike=2 * D + 1, y_spike=y, product_output=0 if gain else D,
                   graded_encoder_per_token=L * 2 * D * H * N, graded_lm_head_per_token=D * V, plastic_per_column=D,
                   out_synapses_per_layer=H * N * ((2 * D + 1) + y))

    @property
    def graded_per_token(self) -> int:
        """Graded synaptic events every token costs whatever spikes: E, E_v of every layer, lm_head."""
        return self.graded_encoder_per_token + self.graded_lm_head_per_token


def new_stats(batch: int, n_tokens: int, device=None) -> dict:
    """Zeroed per-token statistics (float64), on ``device`` (default CPU): an executor on CUDA
    accumulates them there and moves them to the CPU once, after the run (``stats_to_cpu``)."""
    return {k: torch.zeros(batch, n_tokens, dtype=torch.float64, device=device) for k in EVENT_KEYS}


def stats_to_cpu(stats: dict) -> dict:
    return {k: v.cpu() for k, v in stats.items()}


def accumulate_stats(stats: dict, where, settings, cx, cy, q, g) -> None:
    """Adds one layer's per-token event statistics (counts summed over heads and neurons)."""
    dims = (-2, -1)
    coding, timesteps = settings.coding, settings.timesteps
    dev = stats["x_spikes"].device  # no device-to-host copy when the statistics live on the device
    stats["x_spikes"][where] += spike_events(cx, coding, timesteps).sum(dims).to(dev, torch.float64)
    stats["y_spikes"][where] += spike_events(cy, coding, timesteps).sum(dims).to(dev, torch.float64)
    stats["x_active"][where] += (cx > 0).sum(dims).to(dev, torch.float64)
    stats["y_active"][where] += (cy > 0).sum(dims).to(dev, torch.float64)
    stats["active_columns"][where] += (q != 0).sum(dims).to(dev, torch.float64)
    stats["g_nonzero"][where] += (g != 0).sum(dims).to(dev, torch.float64)


def event_counts(stats: dict, net, settings) -> dict:
    """Totals over the run of the events that cost energy (definitions: docs/spiking-semantics.md).

    Neuron updates: every IF neuron every timestep.
    """
    d = net.dims
    fan = FanOut.of(d, net.gating)
    total = {k: float(v.sum()) for k, v in stats.items()}
    tokens = int(next(iter(stats.values())).numel())
    return {
        "tokens": tokens,
        "spikes": total["x_spikes"] + total["y_spikes"],
        "x_spikes": total["x_spikes"],
        "y_spikes": total["y_spikes"],
        "synaptic_events": total["x_spikes"] * fan.x_spike + total["y_spikes"] * fan.y_spike,
        "graded_synaptic_events": tokens * fan.graded_per_token + total["g_nonzero"] * fan.product_output,
        "plastic_updates": total["active_columns"] * fan.plastic_per_column,
        "plastic_reads": total["active_columns"] * fan.plastic_per_column,
        "neuron_updates": tokens * d.L * 2 * d.H * d.N * settings.timesteps,
        "x_active": total["x_active"],
        "y_active": total["y_active"],
        "synapses_per_layer": 3 * d.H * d.D * d.N + d.H * d.D * d.N,  # E, E_v, decoder + plastic
    }
