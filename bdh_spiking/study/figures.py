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

    def save(self, fig, name: str, tight: bool = True) -> None:
        if tight:
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
        ax.set_ylabel(f"selective sampled synapses\n(byte null, maxT at alpha={settings.alpha})")
        ax.set_title("S: x->residual synapses" if kind == "increments" else "sigma = E_v^T S: x->y neuron pairs")
        ax.legend()
    figs.save(fig, "selectivity_counts.png")


def _increments(figs: _Figures, panels: dict, labels, concepts, settings, seq_len: int) -> None:
    """Per-token increments of each concept's top synapses, as experiment 1 scores them, and the control."""
    if not panels:
        return
    n_tokens = labels.shape[0]
    span = min(n_tokens, 2 * seq_len)
    fig, axes = figs.plt.subplots(len(panels), 1, figsize=(11, 2.0 * len(panels)), squeeze=False)
    for ax, (c, p) in zip(axes[:, 0], panels.items()):
        j = concepts.index(c)
        occ_tok = np.nonzero(labels[:, j])[0]
        start = (occ_tok[0] // seq_len) * seq_len if occ_tok.size else 0
        stop = min(n_tokens, start + span)
        t = np.arange(start, stop) * settings.token_ms / 1000.0
        lab = labels[start:stop, j].astype(bool)
        ax.fill_between(t, 0, 1, where=lab, step="mid", color="r", alpha=0.15, lw=0,
                        transform=ax.get_xaxis_transform(), label="concept bytes")
        for i, (syn, y) in enumerate(p["top"]):
            ax.plot(t, y[start:stop], lw=1.0 if i == 0 else 0.6, alpha=1.0 if i == 0 else 0.6,
                    label=f"top {i + 1}: l{syn[0]} h{syn[1]} d{syn[2]} pair{syn[3]}")
        syn, y = p["control"]
        ax.plot(t, y[start:stop], color="k", lw=0.8, ls="--", label=f"control: l{syn[0]} h{syn[1]} d{syn[2]} pair{syn[3]}")
        for b in range(start, stop, seq_len):
            ax.axvline(b * settings.token_ms / 1000.0, color="k", ls=":", lw=0.6)
        ax.set_title(f"{c!r}: per-character increment |x_t[d]| * ||a_t(pair k)|| (the quantity experiment 1 "
                     "scores), top synapses vs activity-matched control; dotted = passage start", fontsize=8)
        ax.legend(fontsize=6, loc="upper left", ncol=3)
    axes[-1, 0].set_xlabel(f"time [s] at {settings.token_ms:g} ms per character")
    figs.save(fig, "increments.png")


def _memory_curve(figs: _Figures, results: dict) -> None:
    """Context benefit (over the scrambled context) against the one decay axis tau_tokens, with intervals."""
    e2 = results["experiment2"]
    rows = e2["decay"]
    if not rows:
        return
    fig, ax = figs.plt.subplots(figsize=(6.5, 4))
    x = np.array([r["tau_tokens"] for r in rows])
    y = np.array([r["context_benefit"] for r in rows])
    ci = np.array([r["context_benefit_ci95"] for r in rows])
    ax.errorbar(x, y, yerr=[y - ci[:, 0], ci[:, 1] - y], fmt="o-", capsize=3, label="decay (95% CI, paired by word)")
    row = e2["table"]["intact"]
    ax.axhline(row["context_benefit"], color="k", ls="--", label="intact")
    ax.axhspan(*row["context_benefit_ci95"], color="k", alpha=0.08, label="intact 95% CI")
    ax.axhline(0, color="grey", lw=0.8, label=f"floor: {e2['baseline']} (0 by construction)")
    tau = e2["hold_time"].get("tau_half_tokens")
    if tau is not None and math.isfinite(tau):
        ax.axvline(tau, color="r", lw=0.8, label=f"tau_half {tau:.3g} tokens")
    if len(set(x.tolist())) > 1:
        ax.set_xscale("log")
    ax.set_xlabel("decay time constant tau / presentation time per character (tokens): the only axis "
                  "(tau_ms = tau_tokens x token_ms)", fontsize=7)
    ax.set_ylabel("context benefit [nats/byte]")
    ax.legend(fontsize=7)
    figs.save(fig, "memory_vs_tau_tokens.png")


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
    ax.set_xlabel(f"log10 rate [Hz] = spikes per character / {settings.token_ms:g} ms")
    ax.set_ylabel("neurons")
    ax.set_title(f"Hz set by the chosen token time ({settings.token_ms:g} ms per character: rates scale as 1/token_ms)"
                 f"\nand by the conversion's calibrated thresholds (at most T*K = "
                 f"{settings.timesteps * settings.max_spikes} spikes per character)", fontsize=7)
    ax.legend(fontsize=7)
    figs.save(fig, "rates_hist.png")


def raster_artists(ax, raster: Raster, t0: float = 0.0, t1: float | None = None):
    """Draws the raster's events with start time in [t0, t1): one marker per (neuron, step), colour and
    size by the step's spike count (1..K). Returns the scatter collection (its array holds the counts)."""
    import matplotlib

    t1 = math.inf if t1 is None else t1
    keep = (raster.times >= t0) & (raster.times < t1)
    cmap = matplotlib.colormaps["viridis"].resampled(raster.max_spikes)
    return ax.scatter(raster.times[keep], raster.neurons[keep], c=raster.counts[keep], s=4 + 6 * raster.counts[keep],
                      cmap=cmap, vmin=0.5, vmax=raster.max_spikes + 0.5, marker="s", linewidths=0)


def _raster_axes(ax, raster: Raster, ids, t1: float) -> None:
    text = bytes(ids[0, :raster.n_tokens].tolist()).decode("utf-8", "replace")
    for i, ch in enumerate(text):
        if i * raster.token_ms < t1:
            ax.text(i * raster.token_ms + raster.timesteps * raster.step_ms / 2, -3, repr(ch)[1:-1], ha="center",
                    fontsize=7)
            ax.axvline(i * raster.token_ms, color="grey", lw=0.3)
    bounds = [i for i in range(1, raster.n_neurons) if raster.rows[i][:2] != raster.rows[i - 1][:2]]
    for b in bounds:
        ax.axhline(b - 0.5, color="grey", lw=0.3)
    ax.set_ylim(-6, raster.n_neurons)
    ax.set_xlabel("time [ms]: step s of character i at i * token_ms + s * dt_ms")


def _raster(figs: _Figures, raster: Raster, ids, settings) -> None:
    """Exact per-step spike counts of sampled x neurons (recomputed by rates.raster_spikes): all shown
    characters at their real times, and a zoom on the T steps of the first character."""
    fig, axes = figs.plt.subplots(2, 1, figsize=(11, 7), layout="constrained")
    sc = raster_artists(axes[0], raster)
    _raster_axes(axes[0], raster, ids, raster.n_tokens * raster.token_ms)
    burst = raster.timesteps * raster.step_ms
    raster_artists(axes[1], raster, 0.0, burst)
    _raster_axes(axes[1], raster, ids, burst)
    axes[1].set_xlim(0, burst)
    bar = fig.colorbar(sc, ax=axes, label="spikes in the step (multispike, up to K)", fraction=0.02, aspect=40)
    bar.set_ticks(range(1, raster.max_spikes + 1))
    axes[0].set_ylabel("sampled x neuron (by layer, head)")
    axes[1].set_ylabel("sampled x neuron")
    axes[0].set_title(f"x spikes of {raster.n_neurons} neurons: {raster.sampling}\nT={raster.timesteps} steps of "
                      f"{raster.step_ms:g} ms at the start of each {raster.token_ms:g} ms character, silent after; "
                      f"active (neuron, character): sample {raster.sample_active_fraction:.1%}, all x neurons "
                      f"{raster.population_active_fraction:.1%}", fontsize=8)
    axes[1].set_title(f"zoom: the {raster.timesteps} steps of the first character", fontsize=8)
    figs.save(fig, "raster.png", tight=False)


def write_figures(out: Path, results: dict, traj: dict, labels, concepts, rates: dict, raster: Raster, ids,
                  settings, seq_len: int, bio: dict | None = None) -> list[str]:
    """Draws every figure into out; returns their file names (bio: the window's runs, when they ran)."""
    figs = _Figures(out)
    _selectivity_counts(figs, results, concepts, settings)
    _increments(figs, traj, labels, concepts, settings, seq_len)
    _memory_curve(figs, results)
    bio_ok = bio is not None and "_per_neuron_hz" in bio
    _rates_hist(figs, rates, bio if bio_ok else None, settings)
    _raster(figs, raster, ids, settings)
    if bio_ok:
        from ..biophysical_figures import plot_monitors

        figs.files += [Path(f).name for f in plot_monitors(bio["_result"], out, prefix="biophysical")]
    return figs.files
