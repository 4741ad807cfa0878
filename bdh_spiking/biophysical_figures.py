"""Figures of a biophysical run (Brian2, mode 'biophysical'): raster, membrane traces, Hebbian
weight trajectories, and the fidelity of a parameter sweep."""

from __future__ import annotations

from pathlib import Path

from .fileio import atomic_savefig


def plot_monitors(result, out_dir, prefix: str = "biophysical") -> list:
    """Raster, membrane traces and Hebbian weight trajectories from a biophysical run's records."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rec, written = result.records, []
    token_ms = result.settings["biophysical"]["token_ms"]
    if "spikes_x" in rec:
        fig, axes = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
        for ax, pop in zip(axes, ("x", "y")):
            r = rec[f"spikes_{pop}"]
            pos = {n: i for i, n in enumerate(r["neurons"])}
            ax.plot(r["t_ms"].numpy(), [pos[int(i)] for i in r["i"]], "|", ms=4, color="k")
            ax.set_ylabel(f"{pop} neuron (layer-major)")
        axes[-1].set_xlabel("simulated time [ms]")
        fig.suptitle(f"spike raster (batch 0, head 0; token_ms {token_ms:g}, "
                     f"{result.settings['biophysical']['schedule']})", fontsize=9)
        fig.tight_layout()
        path = out_dir / f"{prefix}_raster.png"
        atomic_savefig(fig, path, dpi=110)
        plt.close(fig)
        written.append(path)
    if "v_x" in rec:
        fig, axes = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
        for ax, pop in zip(axes, ("x", "y")):
            r = rec[f"v_{pop}"]
            for row in range(min(4, r["v"].shape[0])):
                ax.plot(r["t_ms"].numpy(), r["v"][row].numpy(), lw=0.7, label=f"neuron {r['neurons'][row]}")
            ax.axhline(1.0, color="r", lw=0.6, ls=":")
            ax.set_ylabel(f"{pop} membrane v")
            ax.legend(fontsize=6)
        axes[-1].set_xlabel("simulated time [ms]")
        fig.tight_layout()
        path = out_dir / f"{prefix}_membrane.png"
        atomic_savefig(fig, path, dpi=110)
        plt.close(fig)
        written.append(path)
    if "weights" in rec and len(rec["weights"]["token"]):
        r = rec["weights"]
        fig, ax = plt.subplots(figsize=(8, 4))
        for col in range(min(16, r["S"].shape[1])):
            l, _, d, n = r["synapses"][col]
            ax.plot(r["token"].numpy(), r["S"][:, col].numpy(), lw=0.8, label=f"l{l} d{d} n{n}")
        ax.set_xlabel("token (before its read)")
        ax.set_ylabel("plastic weight S (fixed frame)")
        ax.legend(fontsize=5, ncol=2)
        fig.tight_layout()
        path = out_dir / f"{prefix}_weights.png"
        atomic_savefig(fig, path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def plot_sweep(name: str, values, runs, path) -> Path:
    """Top-1 agreement and cross-entropy difference vs dense against the swept parameter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    axes[0].plot(values, [100 * r["top1_agreement"] for r in runs], "o-")
    axes[0].set_ylabel("top-1 agreement with dense (%)")
    axes[1].plot(values, [100 * r["ce_rel_diff"] for r in runs], "o-")
    axes[1].set_ylabel("cross-entropy difference vs dense (%)")
    for ax in axes:
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
    fig.suptitle(f"brian2 biophysical: fidelity vs {name}", fontsize=9)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)
    return path


def plot_ladder(rows: list, path) -> Path:
    """Fidelity (top-1, dCE), rates (median rate, fraction active, clipped fraction) and the
    constraint counts of the built network (Dale violations, negative rates; where measured) against rung."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [r["rung"] for r in rows]
    xs = list(range(len(rows)))
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    axes[0].plot(xs, [100 * r["top1_agreement"] for r in rows], "o-", label="top-1 agreement %")
    axes[0].plot(xs, [100 * r["ce_rel_diff"] for r in rows], "s-", label="dCE % vs dense")
    axes[0].axhline(0, color="grey", lw=0.5)
    axes[0].set_title("fidelity against the dense model", fontsize=9)
    axes[1].plot(xs, [r["rate_hz_median"] for r in rows], "o-")
    axes[1].set_title("median rate of active neurons [Hz]", fontsize=9)
    axes[2].plot(xs, [r["fraction_active"] for r in rows], "o-", label="fraction active")
    axes[2].plot(xs, [r["clipped_fraction"] for r in rows], "s-", label="clipped fraction")
    axes[2].axhline(0.02, color="red", lw=0.7, ls="--", label="clip limit 0.02")
    for key, mark in (("dale_violations", "o-"), ("negative_rates", "s-")):
        axes[3].plot(xs, [r.get(key, float("nan")) if r.get(key) is not None else float("nan") for r in rows], mark,
                     label=key.replace("_", " "))
    axes[3].set_yscale("symlog", linthresh=1)
    axes[3].set_title("constraints broken in the built network (units)", fontsize=9)
    axes[3].legend(fontsize=7)
    for ax in axes:
        ax.set_xticks(xs, names, rotation=20, fontsize=8)
    axes[0].legend(fontsize=7)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
