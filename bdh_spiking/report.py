"""The equivalence report: dense vs graded vs spiking, per backend; table, JSON and plots.

``compare`` runs the dense model (float64) and each requested backend x coding x T on the same
token sequences and measures how closely the spiking network reproduces the dense model, and,
for every backend other than the reference, how its spike counts differ from the reference's.
"""

from __future__ import annotations

import dataclasses
import math
import platform
from pathlib import Path

import torch
import torch.nn.functional as F

from . import __version__
from .errors import ConfigError
from .backends import parse_backends, simulate
from .clipping import clipping, clipping_warning
from .fileio import atomic_savefig, atomic_write_text, json_text
from .dense_probe import DenseReference, dense_reference  # noqa: F401 (part of this module's interface)
from .distributed import simulate_sharded, world_size
from .semantics import GRADED_RTOL, TIE_EPS, FanOut


def _ce(logits, ids):
    return float(F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)))


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.reshape(-1).double(), b.reshape(-1).double()
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / den if den > 0 else float("nan")


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.reshape(-1).double(), b.reshape(-1).double()
    den = float(a.norm() * b.norm())
    return float((a * b).sum()) / den if den > 0 else float("nan")


def fidelity(dense: DenseReference, result, ids: torch.Tensor) -> dict:
    """Every fidelity number of one run against the dense model."""
    d_logits, s_logits = dense.logits, result.logits.to(torch.float64).cpu()
    diff = (s_logits - d_logits).abs()
    ce_d, ce_s = _ce(d_logits, ids), _ce(s_logits, ids)
    logp_d = F.log_softmax(d_logits, -1)
    kl = float((logp_d.exp() * (logp_d - F.log_softmax(s_logits, -1))).sum(-1).mean())
    out = {
        "top1_agreement": float((s_logits.argmax(-1) == d_logits.argmax(-1)).double().mean()),
        "max_abs_dlogit": float(diff.max()),
        "mean_abs_dlogit": float(diff.mean()),
        "max_rel_dlogit": float(diff.max() / d_logits.abs().max()),
        "ce_dense": ce_d,
        "ce_spiking": ce_s,
        "ce_rel_diff": (ce_s - ce_d) / ce_d,
        "kl_per_token": kl,
    }
    rec = result.records
    if "a_hat" in rec:
        L = rec["a_hat"].shape[2]
        out["corr_x_per_layer"] = [_corr(dense.a[:, :, i], rec["a_hat"][:, :, i]) for i in range(L)]
        out["corr_y_per_layer"] = [_corr(dense.g[:, :, i], rec["g_hat"][:, :, i]) for i in range(L)]
    if "state" in rec:
        out["state_cosine_per_layer"] = [_cos(dense.state[i], rec["state"][i]) for i in range(dense.state.shape[0])]
    return out


def firing(result, net) -> dict:
    ev, d = result.events, net.dims
    tokens = ev["tokens"]
    neurons = d.L * d.H * d.N
    out_synapses = d.L * FanOut.of(d, net.gating).out_synapses_per_layer
    return {
        "spikes_per_token": ev["spikes"] / tokens,
        "synaptic_events_per_token": ev["synaptic_events"] / tokens,
        "graded_synaptic_events_per_token": ev["graded_synaptic_events"] / tokens,
        "plastic_updates_per_token": ev["plastic_updates"] / tokens,
        "neuron_updates_per_token": ev["neuron_updates"] / tokens,
        "x_spikes_per_neuron_per_token": ev["x_spikes"] / (tokens * neurons),
        "y_spikes_per_neuron_per_token": ev["y_spikes"] / (tokens * neurons),
        "x_silent_fraction": 1.0 - ev["x_active"] / (tokens * neurons),
        "y_silent_fraction": 1.0 - ev["y_active"] / (tokens * neurons),
        "spikes_per_synapse_per_token": ev["synaptic_events"] / (tokens * out_synapses),
    }


def spike_differences(ref, other) -> dict:
    """Neuron x token count differences against the reference; ties judged by the reference margins.

    Graded coding sends float payloads: two payloads differ when they are further apart than
    GRADED_RTOL relative (a count of graded spikes differs only where a current changes sign).
    """
    graded = ref.settings.get("coding") == "graded"
    diffs = {"max_spike_count_diff_vs_reference": 0.0, "differing_spikes_vs_reference": 0,
             "near_threshold_ties": 0}
    for pop in ("x", "y"):
        a, b = ref.records[f"{pop}_counts"].double(), other.records[f"{pop}_counts"].double()
        delta = (a - b).abs()
        differ = delta > (GRADED_RTOL * torch.clamp(a.abs(), min=1.0) if graded else 0.0)
        diffs["max_spike_count_diff_vs_reference"] = max(diffs["max_spike_count_diff_vs_reference"],
                                                         float(delta.max()) if delta.numel() else 0.0)
        diffs["differing_spikes_vs_reference"] += int(differ.sum())
        diffs["near_threshold_ties"] += int((differ & (ref.records[f"{pop}_margins"] < TIE_EPS)).sum())
    diffs["non_tie_differences"] = diffs["differing_spikes_vs_reference"] - diffs["near_threshold_ties"]
    return diffs


# Backends that run on the CPU only: compare runs them on the CPU when a CUDA device is asked for.
CPU_ONLY_BACKENDS = ("lava", "brian2")


def _pair_counts(result) -> dict:
    """The x and y counts of one run, kept (on the CPU) for the pairwise comparison: integer dtype
    for spike counts (exact, smaller), float64 for graded payloads."""
    graded = result.settings.get("coding") == "graded"
    out = {}
    for pop in ("x", "y"):
        c = result.records[f"{pop}_counts"].detach().cpu()
        out[pop] = c.double() if graded else c.round().to(torch.int32)
    return out


def pair_differences(a: dict, b: dict, ref, graded: bool) -> dict:
    """Count differences between two runs' ``_pair_counts``; ties judged by the reference margins
    (as spike_differences)."""
    out = {"max_spike_count_diff": 0.0, "differing": 0, "near_threshold_ties": 0}
    for pop in ("x", "y"):
        ca, cb = a[pop].double(), b[pop].double()
        delta = (ca - cb).abs()
        differ = delta > (GRADED_RTOL * torch.clamp(torch.maximum(ca.abs(), cb.abs()), min=1.0) if graded else 0.0)
        out["max_spike_count_diff"] = max(out["max_spike_count_diff"], float(delta.max()) if delta.numel() else 0.0)
        out["differing"] += int(differ.sum())
        out["near_threshold_ties"] += int((differ & (ref.records[f"{pop}_margins"].cpu() < TIE_EPS)).sum())
    out["non_tie_differences"] = out["differing"] - out["near_threshold_ties"]
    return out


@dataclasses.dataclass
class Report:
    meta: dict
    runs: list

    def to_dict(self) -> dict:
        return {"meta": self.meta, "runs": self.runs}

    def to_json(self, path: str | Path | None = None) -> str:
        text = json_text(self.to_dict(), default=_jsonable)
        if path is not None:
            atomic_write_text(path, text + "\n")
        return text

    def table(self) -> str:
        cols = [("backend", "backend", "{}"), ("mode", "mode", "{}"), ("coding", "coding", "{}"),
                ("T", "timesteps", "{}"), ("top1 %", "top1_agreement", "{:.2%}"),
                ("CE dense", "ce_dense", "{:.4f}"), ("CE spk", "ce_spiking", "{:.4f}"),
                ("dCE %", "ce_rel_diff", "{:+.3%}"), ("KL/tok", "kl_per_token", "{:.2e}"),
                ("max rel dlogit", "max_rel_dlogit", "{:.2e}"), ("spikes/tok", "spikes_per_token", "{:,.0f}"),
                ("syn ev/tok", "synaptic_events_per_token", "{:,.0f}"), ("tok/s", "tokens_per_s", "{:,.0f}"),
                ("max|dcount| vs ref", "max_spike_count_diff_vs_reference", "{:.0f}"),
                ("ties", "near_threshold_ties", "{}"), ("clipped %", "clipped_fraction", "{:.3%}")]
        if any("saturations_total" in run for run in self.runs):
            cols.append(("saturations", "saturations_total", "{:,}"))
        rows = [[h for h, _, _ in cols]]
        for run in self.runs:
            rows.append([fmt.format(run[k]).replace("%", "") if k in run and run[k] is not None else "-"
                         for _, k, fmt in cols])
        widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
        lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        m = self.meta
        head = (f"model: {m['model']['source']}  |  eval text: {m['text']['name']} ({m['text']['tokens']} tokens, "
                f"{m['text']['sequences']} x {m['text']['seq_len']})  |  calibration: {m['calibration'].get('text')}"
                f"  |  gating: {m['gating']}")
        return head + "\n" + "\n".join(lines)

    def pairwise_table(self) -> str:
        """Maximum spike-count difference between each pair of backends run with the same coding
        and T (from meta['pairwise']); '' when fewer than two backends ran."""
        pairs = self.meta.get("pairwise") or []
        if not pairs:
            return ""
        order = {}
        for p in pairs:
            order.setdefault((p["coding"], p["timesteps"]), len(order))
        pairs = sorted(pairs, key=lambda p: order[(p["coding"], p["timesteps"])])  # stable: backend order kept
        head = ["coding", "T", "backend a", "backend b", "max|dcount|", "differing", "ties", "non-tie"]
        rows = [head] + [[p["coding"], str(p["timesteps"]), p["a"], p["b"], f"{p['max_spike_count_diff']:.4g}",
                          f"{p['differing']:,}", f"{p['near_threshold_ties']:,}", f"{p['non_tie_differences']:,}"]
                         for p in pairs]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return ("spike counts, backend against backend (per neuron per token; ties judged by the reference "
                f"run's margins, eps {self.meta.get('tie_eps', TIE_EPS):g}):\n" + "\n".join(lines))

    def plot(self, out_dir: str | Path) -> list:
        """Fidelity vs T (when several T were run) and firing per run; returns the files written."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        groups = {}
        for r in self.runs:
            groups.setdefault((r["backend"], r["coding"], r["mode"]), []).append(r)
        sweeps = {k: sorted(v, key=lambda r: r["timesteps"]) for k, v in groups.items() if len(v) > 1}
        if sweeps:
            fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
            for (backend, coding, mode), runs in sweeps.items():
                Ts = [r["timesteps"] for r in runs]
                label = f"{backend}/{coding}/{mode}"
                axes[0].plot(Ts, [100 * r["top1_agreement"] for r in runs], "o-", label=label)
                axes[1].plot(Ts, [max(abs(r["ce_rel_diff"]) * 100, 1e-4) for r in runs], "o-", label=label)
                axes[2].plot(Ts, [max(r["kl_per_token"], 1e-8) for r in runs], "o-", label=label)
            axes[0].set_ylabel("top-1 agreement with dense (%)")
            axes[1].set_ylabel("|cross-entropy difference| (%)")
            axes[1].set_yscale("log")
            axes[2].set_ylabel("KL(dense || spiking) nats/byte")
            axes[2].set_yscale("log")
            for ax in axes:
                ax.set_xscale("log", base=2)
                ax.set_xlabel("timesteps per token T")
                ax.grid(alpha=0.3)
            axes[0].legend(fontsize=7)
            fig.suptitle(f"Fidelity vs T ({self.meta['model']['source']}, gating {self.meta['gating']}, "
                         f"{self.meta['text']['tokens']} held-out tokens)", fontsize=9)
            fig.tight_layout()
            path = out_dir / "fidelity_vs_T.png"
            atomic_savefig(fig, path, dpi=120)
            plt.close(fig)
            written.append(path)
        layer_runs = [r for r in self.runs if "corr_x_per_layer" in r]
        if layer_runs:
            fig, ax = plt.subplots(figsize=(6, 3.6))
            for r in layer_runs:
                layers = range(len(r["corr_x_per_layer"]))
                ax.plot(layers, r["corr_x_per_layer"], "o-", label=f"x {r['backend']}/{r['coding']}/T={r['timesteps']}")
                ax.plot(layers, r["corr_y_per_layer"], "s--", label=f"y {r['backend']}/{r['coding']}/T={r['timesteps']}")
            ax.set_xlabel("layer")
            ax.set_ylabel("correlation dense vs decoded counts")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
            fig.tight_layout()
            path = out_dir / "layer_correlation.png"
            atomic_savefig(fig, path, dpi=120)
            plt.close(fig)
            written.append(path)
        return written


def _jsonable(obj):
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def baseline_mode(mode: str) -> str:
    """The mode of the reference baseline: the same as the others', except that the reference has no
    biophysical mode and runs 'discrete' at the same coding and T (it is then only the baseline of
    the "vs ref" count columns; the fidelity numbers are against the dense model)."""
    return "discrete" if mode == "biophysical" else mode


BIO_ROW_KEYS = ("rung", "ladder", "clipped_fraction", "clipped_fraction_x", "clipped_fraction_y", "rate_hz_median",
                "fraction_active", "bio_s_per_wall_s", "simulated_ms", "brian2_device", "threads", "dale_violations",
                "negative_rates", "inhibitory_populations", "plastic_read")


def describe_run(dense, result, net, ids, backend, mode, coding, T, max_spikes, device, run_device) -> dict:
    """One row of the report: settings, fidelity against the dense model, firing, saturations."""
    run = {"backend": backend, "mode": mode, "coding": coding, "gating": net.gating, "timesteps": T,
           "max_spikes": max_spikes if coding == "multispike" else None, "tokens": result.tokens,
           "wall_s": result.wall_s, "tokens_per_s": result.tokens / max(result.wall_s, 1e-12),
           "device": str(result.settings.get("device", run_device)), "dtype": result.settings.get("dtype")}
    if run_device is not device:
        run["device_note"] = f"{device} asked for; the {backend} backend runs on the CPU only"
    run.update(fidelity(dense, result, ids))
    run.update(firing(result, net))
    run.update(clipping(dense, net, coding, max_spikes))
    for key in BIO_ROW_KEYS:  # mode biophysical: the fidelity ladder's own measures
        if key in result.settings:
            run[key] = result.settings[key]
    if "saturations" in result.events:  # mode 'fixed-point': every clamp, counted per kind
        run["saturations"] = dict(result.events["saturations"])
        run["saturations_total"] = result.events["saturations_total"]
        run["quantization"] = result.settings.get("quantization")
    return run


def evaluation_request(net, token_ids, timesteps, codings):
    """(ids (B, T) int64, timesteps list, codings list), refusing degenerate evaluations before
    any work: no sequence, sequences of fewer than 2 tokens (no prediction to score), float ids,
    no timesteps or codings."""
    from .backends.registry import normalize_ids

    try:
        ids = normalize_ids(token_ids, net.dims.V)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"token ids: {exc}") from None
    if ids.shape[1] < 2:
        raise ConfigError(f"an evaluation needs at least one sequence of at least 2 tokens (one scored "
                          f"prediction), got ids of shape {tuple(ids.shape)}")
    timesteps = [timesteps] if isinstance(timesteps, int) else list(timesteps)
    codings = [codings] if isinstance(codings, str) else list(codings)
    if not timesteps or not codings:
        raise ConfigError(f"an evaluation needs at least one T and one coding (got timesteps={timesteps}, "
                          f"codings={codings})")
    return ids, timesteps, codings


def compare(model, net, token_ids, backends=("reference",), timesteps=(8,), codings=("multispike",),
            include_graded: bool = True, mode: str = "discrete", max_spikes: int = 4, device="cpu",
            dtype=None, text_name: str = "token ids", seed: int = 0, progress: bool = False,
            backend_options: dict | None = None, log=None) -> Report:
    """The equivalence report. token_ids: (B, T) sequences (T,) or a list of backends/T/codings.
    dtype None: each backend's default for the device (float64; snnTorch/Norse on CUDA float32).

    Runs: dense (float64), then per backend: graded T=1 (unless include_graded=False) and every
    coding x T asked for. Backends other than the reference are compared spike by spike with the
    reference run of the same settings.
    """
    ids, timesteps, codings = evaluation_request(net, token_ids, timesteps, codings)
    backends = parse_backends(backends)
    dense = dense_reference(model, ids)
    configs = ([("graded", 1)] if include_graded else []) + [(c, T) for c in codings for T in timesteps
                                                              if not (c == "graded" and T == 1 and include_graded)]
    runs, ref_results = [], {}
    record = ("counts", "margins", "decoded", "state")
    # several backends: each run's counts are kept (in memory only) to compare every pair of backends
    pairwise, pair_counts = ([], {}) if len(backends) > 1 else (None, None)
    for backend in ["reference"] + [b for b in backends if b != "reference"]:
        run_mode = baseline_mode(mode) if backend == "reference" else mode
        opts = (backend_options or {}).get(backend, {})
        run_device = device
        if backend in CPU_ONLY_BACKENDS and str(device).startswith("cuda"):
            run_device = "cpu"
            if log:
                log(f"{backend} runs on the CPU only: running it on cpu (device {device} asked for)")
        for coding, T in configs:
            if log:
                log(f"running {backend}: coding={coding} T={T} mode={run_mode}")
            result = simulate_sharded(net, ids, run=simulate, backend=backend, timesteps=T, coding=coding,
                                      mode=run_mode, device=run_device, record=record, max_spikes=max_spikes,
                                      dtype=dtype, progress=progress, **opts)  # split across torchrun ranks, if any
            run = describe_run(dense, result, net, ids, backend, run_mode, coding, T, max_spikes, device, run_device)
            warning = clipping_warning(run, text_name) if backend == "reference" else None
            if warning and log:
                log(warning)
            if backend == "reference":
                ref_results[(coding, T)] = result
            else:
                run.update(spike_differences(ref_results[(coding, T)], result))
            if backend in backends:
                runs.append(run)
                if pairwise is not None:
                    counts, earlier = _pair_counts(result), pair_counts.setdefault((coding, T), {})
                    for other, other_counts in earlier.items():
                        pairwise.append({"coding": coding, "timesteps": T, "a": other, "b": backend,
                                         **pair_differences(other_counts, counts, ref_results[(coding, T)],
                                                            coding == "graded")})
                    earlier[backend] = counts
    meta = {
        "bdh_spiking_version": __version__,
        "torch": torch.__version__,
        "host": platform.node(),
        "seed": seed,
        "model": {"source": getattr(model, "provenance", {}).get("checkpoint", "in-memory model"),
                  "config": model.config.to_dict(), **getattr(model, "provenance", {})},
        "network": {"provenance": net.provenance, "gating": net.gating, "v_init": net.v_init},
        "calibration": net.calibration,
        "gating": net.gating,
        "text": {"name": text_name, "tokens": int(ids.numel()), "sequences": int(ids.shape[0]),
                 "seq_len": int(ids.shape[1])},
        "dense": {"ce": _ce(dense.logits, ids), "wall_s": dense.wall_s},
        "tie_eps": TIE_EPS,
        "world_size": world_size(),
    }
    if pairwise is not None:
        meta["pairwise"] = pairwise
    return Report(meta, runs)


def compare_to_discrete(net, ids, timesteps: int = 8, coding: str = "rate", max_spikes: int = 4,
                        plasticity=None) -> dict:
    """Fixed-point against discrete mode on the same network and tokens (reference executor):
    top-1 agreement of the logits, fraction of equal spike counts per population, logit error."""
    kw = dict(timesteps=timesteps, coding=coding, max_spikes=max_spikes, plasticity=plasticity, record=("counts",))
    disc = simulate(net, ids, mode="discrete", **kw)
    fxp = simulate(net, ids, mode="fixed-point", **kw)
    scale = float(disc.logits.abs().max())
    out = {"top1_agreement_vs_discrete": float((fxp.logits.argmax(-1) == disc.logits.argmax(-1)).double().mean()),
           "max_rel_dlogit_vs_discrete": float((fxp.logits - disc.logits).abs().max()) / scale if scale else 0.0,
           "saturations_total": fxp.events["saturations_total"]}
    for pop in ("x", "y"):
        a, b = disc.records[f"{pop}_counts"], fxp.records[f"{pop}_counts"]
        out[f"{pop}_counts_equal_fraction"] = float((a == b).double().mean())
        out[f"{pop}_mean_abs_count_diff"] = float((a - b).abs().mean())
    return out
