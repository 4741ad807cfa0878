"""The study's figures: each function draws one PNG from numbers already computed (results and
the runs' per-neuron arrays); nothing here computes a result."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..fileio import atomic_savefig
from .rates import CORTEX_BAND_HZ, Raster


class _Figures:
    """Saves figures into one directory and remembers their file names, in order."""

    def __init__(self, out: Path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.plt, self.out, self.files = plt, out, []

    def save(self, fig, name: str) -> None:
        fig.tight_layout()
        atomic_savefig(fig, self.out / name, dpi=110)
        self.plt.close(fig)
        self.files.append(name)


def _selectivity_counts(figs: _Figures, results: dict, concepts, settings) -> None:
    exp1 = results["experiment1"]["variants"]
    fig, axes = figs.plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, kind in zip(axes, ("increments", "sigma")):
        width = 0.8 / len(exp1)
        for i, (name, v) in enumerate(exp1.items()):
            vals = [v[kind]["per_concept"][c]["selective"] for c in concepts]
            ax.bar(np.arange(len(concepts)) + i * width, vals, width, label=name)
        ax.set_xticks(np.arange(len(concepts)) + 0.4 - width / 2, [repr(c)[1:-1] for c in concepts], rotation=30)
        ax.set_ylabel(f"selective synapses (BH q={settings.fdr})")
        ax.set_title("x->residual increments (b)" if kind == "increments" else "sigma co-firing (a)")
        ax.legend()
    figs.save(fig, "selectivity_counts.png")


def _trajectories(figs: _Figures, traj: dict, labels, concepts, settings, seq_len: int) -> None:
    n_tokens = labels.shape[0]
    span = min(n_tokens, 4 * seq_len)
    fig, axes = figs.plt.subplots(len(concepts), 1, figsize=(11, 1.9 * len(concepts)), squeeze=False)
    for ax, (c, tr) in zip(axes[:, 0], traj.items()):
        j = concepts.index(c)
        start = 0
        occ_tok = np.nonzero(labels[:, j])[0]
        if occ_tok.size:
            start = (occ_tok[0] // seq_len) * seq_len
        stop = min(n_tokens, start + span)
        t = np.arange(start, stop)
        for syn, y in tr:
            ax.plot(t * settings.token_ms / 1000.0, y[start:stop], lw=1,
                    label=f"l{syn[0]} h{syn[1]} d{syn[2]} pair{syn[3]}")
        lab = labels[start:stop, j]
        for k in np.nonzero(lab & ~np.r_[False, lab[:-1]])[0]:
            ax.axvline((start + k) * settings.token_ms / 1000.0, color="r", alpha=0.4, lw=0.8)
        for b in range(start, stop, seq_len):
            ax.axvline(b * settings.token_ms / 1000.0, color="k", ls=":", lw=0.6)
        ax.set_title(f"{c!r}: top synapses (spiking), |S[l,h][d, pair]|; red = occurrence, dotted = passage start",
                     fontsize=8)
        ax.legend(fontsize=6, loc="upper left")
    axes[-1, 0].set_xlabel(f"time [s] at {settings.token_ms:g} ms per character")
    figs.save(fig, "trajectories.png")


def _memory_curves(figs: _Figures, results: dict) -> None:
    """Context benefit against tau (one curve per token time) and against token time (one per tau)."""
    rows = results["experiment2"]["decay"]
    intact = results["experiment2"]["table"]["intact"]["context_benefit"]
    fig, ax = figs.plt.subplots(figsize=(6, 4))
    for token_ms in sorted({r["token_ms"] for r in rows}):
        rr = [r for r in rows if r["token_ms"] == token_ms]
        ax.plot([r["tau_ms"] for r in rr], [r["context_benefit"] for r in rr], "o-",
                label=f"{1000 / token_ms:g} char/s ({token_ms:g} ms)")
    ax.axhline(intact, color="k", ls="--", label="intact")
    ax.axhline(0, color="grey", lw=0.8, label="frozen from start (0 by definition)")
    taus = [r["tau_ms"] for r in rows]
    if len(set(taus)) > 1 and min(taus) > 0:  # a log axis needs positive values and a range
        ax.set_xscale("log")
    ax.set_xlabel("decay time constant tau [ms]")
    ax.set_ylabel("context benefit [nats/byte]")
    ax.legend(fontsize=7)
    figs.save(fig, "memory_vs_tau.png")
    fig, ax = figs.plt.subplots(figsize=(6, 4))
    for tau in sorted({r["tau_ms"] for r in rows}):
        rr = sorted([r for r in rows if r["tau_ms"] == tau], key=lambda r: r["token_ms"])
        ax.plot([r["token_ms"] for r in rr], [r["context_benefit"] for r in rr], "o-", label=f"tau {tau:g} ms")
    ax.axhline(intact, color="k", ls="--", label="intact")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("presentation time per character [ms]")
    ax.set_ylabel("context benefit [nats/byte]")
    ax.legend(fontsize=7)
    figs.save(fig, "memory_vs_token_time.png")


def _rates_hist(figs: _Figures, rates: dict, bio: dict | None, settings) -> None:
    fig, ax = figs.plt.subplots(figsize=(6, 4))
    for pop in ("x", "y"):
        r = rates[pop]["_per_neuron"]
        pos = r[r > 0]
        if pos.size:
            ax.hist(np.log10(pos), bins=50, alpha=0.5,
                    label=f"{pop} neurons ({rates[pop]['silent_fraction_never']:.1%} silent)")
    for pop in ("x", "y") if bio is not None else ():
        r = bio["_per_neuron_hz"][pop]
        pos = r[r > 0]
        if pos.size:
            ax.hist(np.log10(pos), bins=50, histtype="step", lw=1.2, density=False,
                    label=f"{pop}, brian2 biophysical ({bio['tokens']} bytes)")
    ax.axvspan(math.log10(CORTEX_BAND_HZ[0]), math.log10(CORTEX_BAND_HZ[1]), color="g", alpha=0.1,
               label="cortical mean rates ~0.1-10 Hz")
    ax.set_xlabel(f"log10 rate [Hz] (token = {settings.token_ms:g} ms)")
    ax.set_ylabel("neurons")
    ax.legend(fontsize=7)
    figs.save(fig, "rates_hist.png")


def _raster(figs: _Figures, raster: Raster, ids, settings) -> None:
    """Exact per-step spikes of layer 0, head 0, first passage (recomputed by rates.raster_spikes)."""
    fig, ax = figs.plt.subplots(figsize=(11, 4))
    keep = raster.neurons < raster.n_neurons
    ax.scatter(raster.times[keep], raster.neurons[keep], s=12, c="k", marker="|")
    text = bytes(ids[0, :raster.n_tokens].tolist()).decode("utf-8", "replace")
    for i, ch in enumerate(text):
        ax.text((i + 0.5) * settings.token_ms, -4, repr(ch)[1:-1], ha="center", fontsize=8)
    for i in range(raster.n_tokens + 1):
        ax.axvline(i * settings.token_ms, color="grey", lw=0.3)
    ax.set_xlabel("time [ms]")
    ax.set_ylabel(f"x neuron 0-{raster.n_neurons - 1} (layer 0, head 0)")
    ax.set_title(f"spike raster, first {raster.n_tokens} characters (T={settings.timesteps} steps per "
                 f"{settings.token_ms:g} ms character)")
    figs.save(fig, "raster.png")


def write_figures(out: Path, results: dict, traj: dict, labels, concepts, rates: dict, raster: Raster, ids,
                  settings, seq_len: int, bio: dict | None = None) -> list[str]:
    """Draws every figure into out; returns their file names (bio: the window's runs, when they ran)."""
    figs = _Figures(out)
    _selectivity_counts(figs, results, concepts, settings)
    _trajectories(figs, traj, labels, concepts, settings, seq_len)
    _memory_curves(figs, results)
    bio_ok = bio is not None and "_per_neuron_hz" in bio
    _rates_hist(figs, rates, bio if bio_ok else None, settings)
    _raster(figs, raster, ids, settings)
    if bio_ok:
        from ..biophysical_figures import plot_monitors

        figs.files += [Path(f).name for f in plot_monitors(bio["_result"], out, prefix="biophysical")]
    return figs.files
