"""Experiment 3, is the activity biological? Firing rates in Hz per population, silent fractions,
dense activation sparsity, and the exact per-step spikes behind the raster."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..semantics import SimSettings, initial_membrane, neuron_step, run_population
from .activity import Activity

# Cortical reference values (checked sources; see docs/study.md).
CORTEX_REFERENCES = [
    {"source": "Barth & Poulet 2012, Trends Neurosci 35:345-355, doi:10.1016/j.tins.2012.03.008",
     "claim": "review of unbiased recordings in sensory neocortex: a minority of neurons fire most spikes, "
              "supragranular spiking is sparse and some cells are silent"},
    {"source": "Lennie 2003, Curr Biol 13:493-497, doi:10.1016/S0960-9822(03)00135-0",
     "claim": "the energy budget of human cortex limits the neurons that can be substantially active "
              "concurrently, possibly to fewer than 1%"},
    {"source": "Vijayan et al. 2010, J Neurophysiol 103:2074-2084, doi:10.1152/jn.00474.2009",
     "claim": "awake rat barrel cortex: most regular-spiking units fire above 1 Hz, 27.4% above 10 Hz during "
              "cue interaction; under isoflurane all below 1 Hz"},
]
CORTEX_BAND_HZ = (0.1, 10.0)  # the commonly quoted range of mean cortical rates
PAPER_SPARSITY = 0.05  # BDH paper (Kosowski et al. 2025): ~5% of neurons active
RASTER_TOKENS = 24  # characters of the first passage in the raster
RASTER_NEURONS = 64  # x neurons shown


def rates_summary(counts: np.ndarray, token_ms: float) -> dict:
    """counts (n_tokens, L, H, N) spikes per neuron per token -> rates in Hz = count / token duration."""
    per_neuron = counts.mean(0) / (token_ms / 1000.0)  # L,H,N
    flat = per_neuron.reshape(-1)
    return {
        "mean_hz": float(flat.mean()),
        "median_hz": float(np.median(flat)),
        "p90_hz": float(np.percentile(flat, 90)),
        "max_hz": float(flat.max()),
        "mean_hz_per_layer": [float(v) for v in per_neuron.reshape(per_neuron.shape[0], -1).mean(1)],
        "silent_fraction_never": float((flat == 0).mean()),
        "silent_fraction_per_token": float((counts == 0).mean()),
        "in_cortical_band_fraction": float(((flat >= CORTEX_BAND_HZ[0]) & (flat <= CORTEX_BAND_HZ[1])).mean()),
        "_per_neuron": flat,
    }


def public(summary: dict) -> dict:
    """A summary without its private ('_') entries: what results.json holds."""
    return {k: v for k, v in summary.items() if not k.startswith("_")}


def rates_of(act: Activity, settings) -> dict:
    """The run's rates (x and y, with per-neuron rates for the histogram) and how they were obtained."""
    return {"source": act.name, "token_ms": settings.token_ms,
            "conversion": "rate [Hz] = spikes per neuron per token / (token_ms / 1000)",
            "max_possible_hz": settings.timesteps * settings.max_spikes / (settings.token_ms / 1000.0),
            "x": rates_summary(act.x_counts, settings.token_ms), "y": rates_summary(act.y_counts, settings.token_ms)}


def sparsity_of(dense: Activity, spiking: Activity) -> dict:
    return {
        "dense_x_active_fraction": float((dense.x_activity > 0).mean()),
        "dense_x_active_fraction_per_layer": [float(v) for v in (dense.x_activity > 0).mean((0, 2, 3))],
        "dense_gated_active_fraction": float((dense.gated > 0).mean()),
        "spiking_x_active_fraction": float((spiking.x_counts > 0).mean()),
        "spiking_y_active_fraction": float((spiking.y_counts > 0).mean()),
        "paper_reference": PAPER_SPARSITY,
    }


def run_rates(runs: dict, settings) -> tuple[dict, dict]:
    """Experiment 3 on the spiking run: (its results section, the rates with per-neuron values)."""
    rates = rates_of(runs["spiking"], settings)
    section = {"rates": {k: (public(v) if isinstance(v, dict) else v) for k, v in rates.items()},
               "sparsity": sparsity_of(runs["dense"], runs["spiking"]), "cortex_references": CORTEX_REFERENCES,
               "cortex_band_hz": list(CORTEX_BAND_HZ)}
    return section, rates


@dataclasses.dataclass
class Raster:
    """Exact per-step x spikes of layer 0, head 0 over the first characters (times in ms)."""

    n_tokens: int
    n_neurons: int
    times: np.ndarray
    neurons: np.ndarray
    count_check_max_diff: int  # against the run's recorded counts


def raster_spikes(act: Activity, net, w: dict, settings, seq_len: int) -> Raster:
    """Recomputes each step's spikes from the recorded currents (the run keeps only counts), and
    checks them against the run's counts."""
    n_tok = min(seq_len, RASTER_TOKENS)
    xr = torch.as_tensor(act.xres[:n_tok, 0], dtype=torch.float64)
    cur = xr @ w["W_x"][0, 0]  # n_tok, N
    v = torch.full_like(cur, initial_membrane("multispike", net.v_init))
    times, neurons = [], []
    for step in range(settings.timesteps):
        v, spk, _ = neuron_step(v, cur, "multispike", settings.max_spikes, margin=False)
        tt, nn = torch.nonzero(spk > 0, as_tuple=True)
        times.append(((tt.double() + (step + 0.5) / settings.timesteps) * settings.token_ms).numpy())
        neurons.append(nn.numpy())
    sim = SimSettings(timesteps=settings.timesteps, coding="multispike", max_spikes=settings.max_spikes)
    counts, _ = run_population(cur, sim, net.v_init, margins=False)
    check = int(np.abs(act.x_counts[:n_tok, 0, 0] - np.array(counts.numpy())).max())
    return Raster(n_tok, RASTER_NEURONS, np.concatenate(times), np.concatenate(neurons), check)
