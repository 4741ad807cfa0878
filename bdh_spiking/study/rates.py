"""Experiment 3, is the activity biological? Firing rates in Hz per population, silent fractions,
dense activation sparsity, and the exact per-step spikes behind the raster."""

from __future__ import annotations

import dataclasses
import itertools

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
RASTER_NEURONS = 96  # x neurons shown, sampled evenly across layers and heads


def rates_summary(counts: np.ndarray, token_ms: float) -> dict:
    """counts (n_tokens, L, H, N) spikes per neuron per token -> rates in Hz = count / token duration."""
    per_neuron = counts.mean(0) / (token_ms / 1000.0)  # L,H,N
    flat = per_neuron.reshape(-1)
    return {
        "mean_hz": float(flat.mean()),
        "mean_spikes_per_token": float(counts.mean()),  # independent of token_ms
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


def passage_fraction_ci(active: np.ndarray, seq_len: int, seed: int, n_boot: int = 1000) -> list:
    """95% percentile interval of the active fraction, resampling whole passages (tokens of one
    passage share their plastic state and are not independent); a seeded generator of its own."""
    per = active.reshape(-1, seq_len, *active.shape[1:]).mean(axis=tuple(range(1, active.ndim + 1)))
    rng = np.random.default_rng([seed, 29])
    boot = per[rng.integers(0, per.size, size=(n_boot, per.size))].mean(1)
    return [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]


def sparsity_of(dense: Activity, spiking: Activity, seq_len: int | None = None, seed: int = 0) -> dict:
    """Fractions of (neuron, token) active; with seq_len, their intervals over passages."""
    out = {
        "dense_x_active_fraction": float((dense.x_activity > 0).mean()),
        "dense_x_active_fraction_per_layer": [float(v) for v in (dense.x_activity > 0).mean((0, 2, 3))],
        "dense_gated_active_fraction": float((dense.gated > 0).mean()),
        "spiking_x_active_fraction": float((spiking.x_counts > 0).mean()),
        "spiking_y_active_fraction": float((spiking.y_counts > 0).mean()),
        "paper_reference": PAPER_SPARSITY,
    }
    if seq_len:
        out["passages"] = int(dense.x_activity.shape[0] // seq_len)
        out["dense_x_active_fraction_ci95"] = passage_fraction_ci(dense.x_activity > 0, seq_len, seed)
        out["spiking_x_active_fraction_ci95"] = passage_fraction_ci(spiking.x_counts > 0, seq_len, seed)
    return out


def run_rates(runs: dict, settings, seq_len: int | None = None) -> tuple[dict, dict]:
    """Experiment 3 on the spiking run: (its results section, the rates with per-neuron values)."""
    rates = rates_of(runs["spiking"], settings)
    section = {"rates": {k: (public(v) if isinstance(v, dict) else v) for k, v in rates.items()},
               "sparsity": sparsity_of(runs["dense"], runs["spiking"], seq_len, settings.seed),
               "cortex_references": CORTEX_REFERENCES, "cortex_band_hz": list(CORTEX_BAND_HZ)}
    return section, rates


@dataclasses.dataclass
class Raster:
    """Exact per-step x spike counts of sampled neurons over the first characters of the first passage.

    rows: (layer, head, neuron) of each raster row; times in ms (step start + half a step);
    counts: spikes in that step (multispike: 1..K)."""

    n_tokens: int
    rows: list
    times: np.ndarray
    neurons: np.ndarray  # row index of each event
    counts: np.ndarray
    step_ms: float
    token_ms: float
    timesteps: int
    max_spikes: int
    sampling: str
    sample_active_fraction: float  # (neuron, token) with >= 1 spike, sampled rows, shown characters
    population_active_fraction: float  # the same over every x neuron of every layer and head
    count_check_max_diff: int  # against the run's recorded counts

    @property
    def n_neurons(self) -> int:
        return len(self.rows)


def raster_rows(n_layers: int, n_heads: int, n_neurons: int, seed: int, total: int = RASTER_NEURONS) -> list:
    """total x neurons, the same number from every (layer, head), drawn without replacement from a
    generator seeded by (seed, 17) alone; sorted by layer, head, neuron."""
    rng = np.random.default_rng([seed, 17])
    per = max(1, total // (n_layers * n_heads))
    return [(layer, h, int(n)) for layer in range(n_layers) for h in range(n_heads)
            for n in np.sort(rng.choice(n_neurons, size=min(per, n_neurons), replace=False))]


def raster_spikes(act: Activity, net, w: dict, settings, seq_len: int) -> Raster:
    """Recomputes each step's spike counts of the sampled neurons from the recorded currents (the run
    keeps only per-token counts) with the executor's own neuron update, and checks their sums
    against the run's counts. Step s of character i lies at i * token_ms + s * dt_ms."""
    n_tok = min(seq_len, RASTER_TOKENS)
    _, n_layers, n_heads, n_neurons = act.x_counts.shape
    rows = raster_rows(n_layers, n_heads, n_neurons, settings.seed)
    sim = SimSettings(timesteps=settings.timesteps, coding="multispike", max_spikes=settings.max_spikes)
    times, neurons, counts, check = [], [], [], 0
    for (layer, h), group in itertools.groupby(enumerate(rows), key=lambda r: r[1][:2]):
        group = list(group)
        idx = torch.tensor([g[1][2] for g in group])
        xr = torch.as_tensor(act.xres[:n_tok, layer], dtype=torch.float64)
        cur = (xr @ w["W_x"][layer, h])[:, idx]  # n_tok, n
        v = torch.full_like(cur, initial_membrane("multispike", net.v_init))
        for step in range(settings.timesteps):
            v, spk, _ = neuron_step(v, cur, "multispike", settings.max_spikes, margin=False)
            tt, nn = torch.nonzero(spk > 0, as_tuple=True)
            times.append((tt.double() * settings.token_ms + (step + 0.5) * settings.dt_ms).numpy())
            neurons.append(np.array([group[int(j)][0] for j in nn], dtype=np.int64))
            counts.append(spk[tt, nn].numpy().astype(np.int64))
        total, _ = run_population(cur, sim, net.v_init, margins=False)
        check = max(check, int(np.abs(act.x_counts[:n_tok, layer, h][:, idx.numpy()] - total.numpy()).max()))
    sampled = np.stack([act.x_counts[:n_tok, r[0], r[1], r[2]] for r in rows], 1)
    return Raster(n_tok, rows, np.concatenate(times), np.concatenate(neurons), np.concatenate(counts),
                  settings.dt_ms, settings.token_ms, settings.timesteps, settings.max_spikes,
                  f"{len(rows) // (n_layers * n_heads)} x neurons from each of the {n_layers} layers x {n_heads} heads, "
                  f"drawn without replacement (numpy default_rng([seed={settings.seed}, 17]))",
                  float((sampled > 0).mean()), float((act.x_counts[:n_tok] > 0).mean()), check)
