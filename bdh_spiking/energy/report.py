"""The energy report: one row per backend x profile and per dense baseline; table, JSON, plot."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch

from ..fileio import atomic_savefig, atomic_write_text, json_text
from .pricing import BREAK_EVEN

def _steps(meta) -> str:
    """-T of the run ('n/a' in mode biophysical, where the simulator's own steps count)."""
    return "n/a" if meta["timesteps"] is None else str(meta["timesteps"])


def _e(x) -> str:
    return "n/a" if x is None else f"{x:.3e}"


def _shown_energy(r):
    """(joules, is_lower_bound) for display, or None when the bulk of the work has no figure on the device
    (a lower bound over the remaining small components would mislead)."""
    if r["energy_per_token_j"] is not None:
        return r["energy_per_token_j"], False
    main = ("mac",) if r["kind"] == "dense" else ("synaptic", "graded_synaptic")
    if any(r["components"][c]["energy_j"] is None for c in main):
        return None
    return r["energy_per_token_lower_bound_j"], True


@dataclasses.dataclass
class EnergyReport:
    meta: dict
    rows: list

    def to_dict(self) -> dict:
        return {"meta": self.meta, "rows": self.rows}

    def to_json(self, path=None) -> str:
        text = json_text(self.to_dict(), default=_jsonable)
        if path is not None:
            atomic_write_text(path, text + "\n")
        return text

    def _notes_index(self):
        index = {}
        for r in self.rows:
            for n in r["notes"] + r["unavailable"]:
                key = n if n in r["notes"] else f"unavailable: {n}"
                index.setdefault(key, len(index) + 1)
        return index

    def table(self) -> str:
        index = self._notes_index()
        head = ["backend", "profile", "J/token", "x dense45", "syn ev/tok", "graded ev/tok", "neuron upd/tok",
                "plastic upd/tok", "spikes/tok", "spk/synapse", "spike rate", "break-even D23 / Y24", "notes"]
        out = [head]
        for r in self.rows:
            marks = [str(index[n]) for n in r["notes"]] + [str(index[f"unavailable: {n}"]) for n in r["unavailable"]]
            shown = _shown_energy(r)
            energy = "n/a" if shown is None else ((">=" if shown[1] else "") + _e(shown[0]))
            ratio = "-" if r.get("ratio_vs_dense_45nm") is None or energy == "n/a" else (
                ("" if r["energy_per_token_j"] is not None else ">=") + f"{r['ratio_vs_dense_45nm']:.3g}")
            if r["kind"] == "dense":
                out.append([f"dense {r['variant']}", r["profile"], energy, ratio,
                            f"({r['macs_per_token']:,.0f} MAC)", "-", "-", "-", "-", "-", "-", "-", ",".join(marks)])
                continue
            be = r["break_even"]
            out.append([r["backend"], r["profile"], energy, ratio, f"{r['synaptic_events_per_token']:,.0f}",
                        f"{r['graded_synaptic_events_per_token']:,.0f}", f"{r['neuron_updates_per_token']:,.0f}",
                        f"{r['plastic_updates_per_token']:,.0f}", f"{r['spikes_per_token']:,.1f}",
                        f"{r['spikes_per_synapse']:.3g}", f"{r['spike_rate']:.2%}",
                        ("" if be["binary_spikes"] else "graded spikes: ") + f"{be['dampfhoffer2023']} / {be['yan2024']}",
                        ",".join(marks)])
        widths = [max(len(row[i]) for row in out) for i in range(len(head))]
        lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in out]
        lines.insert(1, "  ".join("-" * w for w in widths))
        m = self.meta
        t = m["text"]
        title = (f"energy per token | model: {m['model']} (L={m['dims']['L']} H={m['dims']['H']} D={m['dims']['D']} "
                 f"N={m['dims']['N']}) | text: {t['name']} ({t['tokens']} tokens, {t['sequences']} x {t['seq_len']}) "
                 f"| coding {m['coding']}, T={_steps(m)}, mode {m['mode']}, gating {m['gating']}")
        cb = m["cross_backend"]
        if cb["compared"]:
            same = (f"event counts identical across backends: {'yes' if cb['identical'] else 'no'}, max difference "
                    f"{cb['max_abs_difference']:g} ({cb['max_rel_difference']:.2e} relative"
                    + (f", {cb['worst_key']}" if cb["worst_key"] else "") + ")")
        else:
            same = (f"event counts identical across backends: n/a (one backend: {', '.join(cb['backends'])}), "
                    "max difference 0")
        dens = m["dense_density"]
        foot = [same]
        if dens:
            foot.append(f"dense activity on the same text: non-zero a {dens['a']:.2%}, q {dens['q']:.2%}, "
                        f"gated g {dens['g']:.2%}")
        be = BREAK_EVEN
        foot.append(f"break-even, D23 = {be['dampfhoffer2023']['source']}: SNNs compete only at "
                    f"{be['dampfhoffer2023']['low']}-{be['dampfhoffer2023']['high']} spikes per synapse per inference "
                    "(below / within / above that range)")
        foot.append(f"break-even, Y24 = {be['yan2024']['source']}: spike rate below "
                    f"{be['yan2024']['threshold_t5']:.1%} (T=5) / {be['yan2024']['threshold']:.1%} (T in 5-10) "
                    "vs an equivalent quantized ANN (below / between / above)")
        foot.append("J/token '>=' : lower bound, some events have no figure on that device (never counted as 0); "
                    "x dense45 = energy / dense recurrent FP32 on digital45nm")
        foot += [f"[{i}] {n}" for n, i in index.items()]
        return title + "\n" + "\n".join(lines) + "\n" + "\n".join(foot)

    def plot(self, out_dir) -> list:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        labels, values, colors, hatches = [], [], [], []
        palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
        backends = self.meta["backends"]
        for r in self.rows:
            shown = _shown_energy(r)
            if shown is None or not shown[0]:
                continue
            e, lower = shown
            if r["kind"] == "dense":
                labels.append(f"dense {r['variant']} / {r['profile']}")
                colors.append("0.55")
            else:
                labels.append(f"{r['backend']} / {r['profile']}" + (" (>=)" if lower else ""))
                colors.append(palette[backends.index(r["backend"]) % len(palette)])
            values.append(e)
            hatches.append("//" if lower else "")
        fig, ax = plt.subplots(figsize=(8, 0.28 * len(values) + 1.6))
        bars = ax.barh(range(len(values)), values, color=colors)
        for bar, h in zip(bars, hatches):
            bar.set_hatch(h)
        ax.set_yticks(range(len(values)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("energy per token (J), log scale; hatched = lower bound (missing figures)")
        m = self.meta
        ax.set_title(f"BDH spiking vs dense: energy per token ({m['coding']}, T={_steps(m)}, "
                     f"{m['text']['tokens']} tokens)", fontsize=9)
        ax.grid(axis="x", alpha=0.3, which="both")
        fig.tight_layout()
        path = out_dir / "energy_per_token.png"
        atomic_savefig(fig, path, dpi=120)
        plt.close(fig)
        return [path]


def _jsonable(obj):
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
