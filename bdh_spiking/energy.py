"""Energy per token of the spiking network on neuromorphic hardware, next to the dense model's.

``estimate`` runs the converted network on each backend, counts from the actual spikes every
event that costs energy (the counting rules are in docs/energy.md and in :func:`spiking_counts`),
prices the counts with each hardware profile (``bdh_spiking.profiles``) and adds the dense
model's cost on conventional hardware (FP32 parallel and recurrent, INT8, activation-sparse)::

    from bdh_spiking.energy import estimate, parse_profiles
    rep = estimate(model, net, ids, backends=["reference"], profiles=parse_profiles("loihi,gpu"))
    print(rep.table()); rep.to_json("energy.json"); rep.plot("plots/")

Principles: a profile entry that is absent is *unavailable*, never zero -- a row missing one has
``energy_per_token_j = None`` and a lower bound ``energy_per_token_lower_bound_j`` over what is
priced; every assumption made to price a count (e.g. FP32 arithmetic at 45 nm for the non-spiking
nodes of a neuromorphic chip) is written into the row's ``notes``; and every neuromorphic figure
is shown next to published break-even points so the comparison is not one-sided.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
from pathlib import Path

import torch

from . import __version__
from .errors import ConfigError
from .fileio import atomic_write_text
from .profiles import Profile, list_profiles, load_profile

__all__ = [
    "BREAK_EVEN", "parse_profiles", "spiking_counts", "dense_macs", "dense_elementwise", "dense_activity",
    "price_spiking", "price_dense", "compare_event_counts", "estimate", "EnergyReport",
]

FALLBACK_PROFILE = "digital45nm"  # prices the non-spiking arithmetic where a device publishes none
DENSE_PROFILES = ("gpu", "cpu", "digital45nm")  # dense baselines are always priced on these

#: Published break-even points (shown next to every neuromorphic estimate).
BREAK_EVEN = {
    "dampfhoffer2023": {
        "metric": "spikes_per_synapse_per_inference",
        "low": 0.15,
        "high": 1.38,
        "source": "Dampfhoffer, Mesquida, Valentian & Anghel 2023, 'Are SNNs Really More Energy-Efficient "
                  "Than ANNs? An In-Depth Hardware-Aware Study', IEEE TETCI 7(3):731-741",
        "claim": "IF-neuron SNNs compete with efficient digital ANN implementations only between 0.15 and 1.38 "
                 "spikes per synapse per inference (depending on the ANN implementation)",
    },
    "yan2024": {
        "metric": "spike_rate",
        "threshold": 0.064,
        "threshold_t5": 0.057,
        "source": "Yan, Bai, Tang & Wong 2024, 'Reconsidering the energy efficiency of spiking neural networks', "
                  "arXiv:2409.08290",
        "claim": "against a functionally equivalent quantized ANN (ceil(log2(T+1)) bits), a rate-coded SNN "
                 "needs an average spike rate below 6.4% (v1-v3, T in [5,10]) / 5.7% (v4, T=5) to win",
    },
}

# event-count keys compared across backends (all derived from the backend's own spikes)
COUNT_KEYS = ("x_spikes", "y_spikes", "x_active", "y_active", "active_columns", "g_nonzero",
              "synaptic_events", "graded_synaptic_events", "plastic_updates", "neuron_updates")


# ---------------------------------------------------------------------------------------------
# Profiles


def parse_profiles(spec) -> list[Profile]:
    """'all', 'NAME', 'NAME,NAME,FILE.toml' or a list -> loaded profiles (ProfileError on a bad one)."""
    if isinstance(spec, Profile):
        return [spec]
    items = list(spec) if isinstance(spec, (list, tuple)) else [s.strip() for s in str(spec).split(",")]
    items = [s for s in items if isinstance(s, Profile) or str(s).strip()]
    if not items:
        raise ConfigError("no hardware profile given: use NAME[,NAME...], 'all' or a .toml file")
    out, seen = [], set()
    for item in items:
        names = list_profiles() if str(item).strip().lower() == "all" else [item]
        for name in names:
            p = name if isinstance(name, Profile) else load_profile(name)
            ident = (p.key, str(p.path))
            if ident not in seen:
                seen.add(ident)
                out.append(p)
    return out


def _fallback() -> Profile | None:
    try:
        return load_profile(FALLBACK_PROFILE)
    except Exception:  # a broken install must not hide the device's own figures
        return None


class _Prices:
    """Joules per counted event for one profile: direct entries, and the documented fallbacks."""

    def __init__(self, profile: Profile, fallback):
        self.p = profile
        fallback = _fallback() if isinstance(fallback, str) and fallback == "auto" else fallback
        self.fb = fallback if (fallback is not None and fallback.key != profile.key) else None

    def entry(self, name):
        e = self.p.energy.get(name)
        return (e.value, None) if e is not None else (None, None)

    def arith(self, op: str):
        """FP32 add/mult: the profile's own, else its flop, else digital45nm's (noted)."""
        if op in self.p.energy:
            return self.p.energy[op].value, None
        if "flop" in self.p.energy:
            return self.p.energy["flop"].value, "FP32 adds and multiplies priced as one 'flop' each (no add/mult entry)"
        if self.fb is not None and op in self.fb.energy:
            return self.fb.energy[op].value, (
                f"no arithmetic figure on this device: the non-spiking FP32 adds and multiplies (LayerNorm, residual, "
                f"gating, oscillator phases) priced with {self.fb.key} (Horowitz 2014, 45 nm) -- an assumption")
        return None, None

    def graded(self):
        """One graded synaptic event (payload x weight + accumulate)."""
        if "graded_synaptic_op" in self.p.energy:
            return self.p.energy["graded_synaptic_op"].value, None
        if "synaptic_op" in self.p.energy:
            mult, _ = self.arith("mult")  # the multiply's own fallback is noted with the arithmetic
            if mult is None:
                return None, None
            note = "no 'graded_synaptic_op': a graded event is priced as synaptic_op + one FP32 multiply (payload x weight)"
            return self.p.energy["synaptic_op"].value + mult, note
        return None, None

    def mac(self, name="mac"):
        if name in self.p.energy:
            return self.p.energy[name].value, None
        if name == "mac" and "flop" in self.p.energy:
            return 2 * self.p.energy["flop"].value, "FP32 MAC priced as 2 'flop' (no 'mac' entry)"
        return None, None


# ---------------------------------------------------------------------------------------------
# Counting


def _dims(net_or_dims) -> dict:
    return net_or_dims.dims if hasattr(net_or_dims, "dims") else dict(net_or_dims)


def layernorm_ops(dims: dict) -> dict:
    """Adds and multiplies of every LayerNorm of one token (the same in the dense and spiking forms).

    LayerNorm over n values: n adds (mean), n subtractions, n multiplies + n adds (variance),
    n multiplies (scale) and one reciprocal square root (counted as one multiply): 3n adds, 2n+1 mults.
    Per token: the embedding (D), and per layer the attention read-out per head (H x D), the
    decoder output (D) and the residual sum (D).
    """
    L, H, D = dims["L"], dims["H"], dims["D"]
    values = D + L * (H * D + 2 * D)
    norms = 1 + L * (H + 2)
    return {"adds": 3 * values, "mults": 2 * values + norms}


def spiking_counts(result, net) -> dict:
    """Events of one simulation run, per token, from the backend's own spike statistics.

    Starts from ``backends.base.event_counts`` (result.events) and the per-token statistics, and adds
    the nodes that cost something without being spikes. Every rule is in docs/energy.md.
    """
    d = net.dims
    L, H, D, N, V = d["L"], d["H"], d["D"], d["N"], d["V"]
    ev = result.events
    tok = ev["tokens"]
    T = int(result.settings["timesteps"])
    coding = result.settings["coding"]
    gain = net.gating == "gain"
    tot = {k: float(v.sum()) for k, v in result.stats.items()}
    ac, gnz, xa = tot["active_columns"], tot["g_nonzero"], tot["x_active"]

    graded_E = tok * L * 2 * D * H * N  # LayerNorm outputs -> E and E_v, dense graded input
    graded_lm = tok * D * V  # final residual -> lm_head
    graded_dec = 0.0 if gain else gnz * D  # product node's non-zero outputs -> decoder
    if abs((graded_E + graded_lm + graded_dec) - ev["graded_synaptic_events"]) > 1e-6 * max(1.0, graded_E):
        raise RuntimeError("graded synaptic events disagree with backends.base.event_counts (counting rules out of sync)")
    neurons = L * 2 * H * N  # IF neurons (x and y) per token
    inactive = 0.0 if not gain else (tok * L * H * N - xa) * T  # gain: y neurons whose gate x is silent
    ln = layernorm_ops(d)
    arith_adds = tok * ln["adds"] + tok * L * D + ac  # LayerNorm, residual sum, oscillator rotation
    arith_mults = tok * ln["mults"] + (xa if gain else gnz) + 2 * ac  # LayerNorm, gating, oscillator
    graded_packets = tok * (L * (D + H * D) + D) + (0.0 if gain else gnz)
    out_synapses = L * H * N * ((2 * D + 1) + (D if gain else 1))
    total = {
        "tokens": tok,
        "timesteps": T,
        "coding": coding,
        "spikes": ev["spikes"],
        "x_spikes": ev["x_spikes"],
        "y_spikes": ev["y_spikes"],
        "synaptic_events": ev["synaptic_events"],  # spike-driven: x (2D+1), y (D gain / 1 product)
        "synaptic_events_graded_coding": coding == "graded",
        "graded_synaptic_events": ev["graded_synaptic_events"],
        "graded_encoder_events": graded_E,
        "graded_lm_head_events": graded_lm,
        "graded_decoder_events": graded_dec,
        "neuron_updates": ev["neuron_updates"],
        "neuron_updates_active": ev["neuron_updates"] - inactive,
        "neuron_updates_inactive": inactive,
        "plastic_updates": ev["plastic_updates"],  # event-driven: D per active column
        "plastic_updates_rotating": tok * L * H * D * N,  # the non-event-driven (rotating-frame) form
        "plastic_reads": ev["plastic_reads"],
        "routed_spikes": ev["spikes"],
        "routed_graded_packets": graded_packets,
        "arith_adds": arith_adds,
        "arith_mults": arith_mults,
        "gating_mults": xa if gain else gnz,
        "oscillator_mults": 2 * ac,
        "oscillator_adds": ac,
        "layernorm_adds": tok * ln["adds"],
        "layernorm_mults": tok * ln["mults"],
        "residual_adds": tok * L * D,
        "x_active": xa,
        "y_active": tot["y_active"],
        "active_columns": ac,
        "g_nonzero": gnz,
        "spikes_per_synapse": ev["synaptic_events"] / (tok * out_synapses),
        "spike_rate": ev["spikes"] / (tok * neurons * T),
    }
    per_token = {}
    for k, v in total.items():
        if k in ("tokens", "timesteps", "coding", "synaptic_events_graded_coding", "spikes_per_synapse",
                 "spike_rate"):
            per_token[k] = v
        else:
            per_token[k] = v / tok
    return per_token


def dense_macs(dims, form: str = "recurrent", seq_len: int | None = None, density: dict | None = None) -> float:
    """MACs of one token of the dense forward pass.

    recurrent: per layer 3 H D N (E, E_v, decoder) + 2 H D N (state read S q and rank-1 write x q^T),
    plus D V (lm_head). parallel at sequence length S (the official code's full S x S attention,
    masked afterwards): per layer 3 H D N + H S (N + D) per token (scores q q^T and their product
    with x, averaged over the S tokens), plus D V. density (activation-sparse, recurrent form):
    the state read/write scale with the non-zero fraction of q, the decoder with that of g.
    """
    d = _dims(dims)
    L, H, D, N, V = d["L"], d["H"], d["D"], d["N"], d["V"]
    if form == "recurrent":
        if density is None:
            return float(L * (3 * H * D * N + 2 * H * D * N) + D * V)
        return float(L * (2 * H * D * N + density["q"] * 2 * H * D * N + density["g"] * H * D * N) + D * V)
    if form == "parallel":
        if not seq_len:
            raise ConfigError("the parallel form needs the sequence length")
        return float(L * (3 * H * D * N + H * seq_len * (N + D)) + D * V)
    raise ConfigError(f"unknown dense form {form!r}: use recurrent or parallel")


def dense_elementwise(dims, density: dict | None = None) -> dict:
    """Non-MAC FP32 arithmetic of one dense token: LayerNorms, residual sums, a*b, RoPE rotation."""
    d = _dims(dims)
    L, H, D, N = d["L"], d["H"], d["D"], d["N"]
    ln = layernorm_ops(d)
    rq = 1.0 if density is None else density["q"]
    ra = 1.0 if density is None else density["a"]
    return {"adds": ln["adds"] + L * D + rq * L * H * N,
            "mults": ln["mults"] + ra * L * H * N + rq * 2 * L * H * N}


def dense_activity(model, ids) -> dict:
    """Measured non-zero fractions of the dense model on ``ids``: a = ReLU(xE), q = R a, g = a*b."""
    from .model import rope_cos_sin, rotate_pairs
    from .report import dense_reference

    ref = dense_reference(model, ids)
    a, g = ref.a, ref.g  # B,T,L,H,N
    cos, sin = rope_cos_sin(model.attn.freqs, torch.arange(a.shape[1]))
    q = rotate_pairs(a, cos[None, :, None, None, :], sin[None, :, None, None, :])
    return {"a": float((a != 0).double().mean()), "q": float((q != 0).double().mean()),
            "g": float((g != 0).double().mean())}


# ---------------------------------------------------------------------------------------------
# Pricing


def _component(count, price, note, missing):
    if price is None:
        return {"count": count, "joules_each": None, "energy_j": None, "unavailable": missing}
    out = {"count": count, "joules_each": price, "energy_j": count * price}
    if note:
        out["note"] = note
    return out


def _finish(row: dict, components: dict) -> dict:
    notes, unavailable, known = [], [], 0.0
    for name, c in components.items():
        if c["energy_j"] is None:
            unavailable.append(f"{name} ({c['unavailable']})")
        else:
            known += c["energy_j"]
        if c.get("note") and c["note"] not in notes:
            notes.append(c["note"])
    row["components"] = components
    row["energy_per_token_lower_bound_j"] = known
    row["energy_per_token_j"] = None if unavailable else known
    row["unavailable"] = unavailable
    row["notes"] = row.get("notes", []) + notes
    return row


def price_spiking(counts: dict, profile: Profile, fallback="auto") -> dict:
    """Energy per token of one run's counts on one profile; components sum to the total.

    fallback: the profile pricing arithmetic the device has no figure for ("auto": digital45nm; None: none).
    """
    P = _Prices(profile, fallback)
    graded, gnote = P.graded()
    if counts["synaptic_events_graded_coding"]:
        spk, snote, smiss = graded, gnote, "no 'graded_synaptic_op' nor 'synaptic_op'"
    else:
        spk, _ = P.entry("synaptic_op")
        snote, smiss = None, "no 'synaptic_op'"
    nu, _ = P.entry("neuron_update")
    nui, _ = P.entry("neuron_update_inactive")
    if nu is None:
        neuron = _component(counts["neuron_updates"], None, None, "no 'neuron_update'")
    else:
        e = counts["neuron_updates_active"] * nu + counts["neuron_updates_inactive"] * (nu if nui is None else nui)
        neuron = {"count": counts["neuron_updates"], "joules_each": nu, "energy_j": e,
                  "active": counts["neuron_updates_active"], "inactive": counts["neuron_updates_inactive"]}
        if nui is not None:
            neuron["joules_each_inactive"] = nui
    pu, _ = P.entry("plastic_update")
    hop, _ = P.entry("spike_hop")
    add, anote = P.arith("add")
    mult, mnote = P.arith("mult")
    comps = {
        "synaptic": _component(counts["synaptic_events"], spk, snote, smiss),
        "graded_synaptic": _component(counts["graded_synaptic_events"], graded, gnote,
                                      "no 'graded_synaptic_op', nor 'synaptic_op' with a multiply"),
        "neuron_update": neuron,
        "plastic_update": _component(counts["plastic_updates"], pu, None, "no 'plastic_update'"),
        "routing": _component(counts["routed_spikes"] + counts["routed_graded_packets"], hop,
                              "routing: one mesh hop per spike or graded packet (placement not modelled)"
                              if hop is not None else None, "no 'spike_hop'"),
        "arithmetic_add": _component(counts["arith_adds"], add, anote, "no 'add', 'flop' or fallback"),
        "arithmetic_mult": _component(counts["arith_mults"], mult, mnote, "no 'mult', 'flop' or fallback"),
    }
    row = {
        "kind": "spiking",
        "profile": profile.key or profile.name,
        "profile_name": profile.name,
        "device_kind": profile.kind,
        "synaptic_events_per_token": counts["synaptic_events"],
        "graded_synaptic_events_per_token": counts["graded_synaptic_events"],
        "neuron_updates_per_token": counts["neuron_updates"],
        "plastic_updates_per_token": counts["plastic_updates"],
        "plastic_updates_rotating_per_token": counts["plastic_updates_rotating"],
        "plastic_energy_rotating_per_token_j": (counts["plastic_updates_rotating"] * pu if pu is not None else None),
        "spikes_per_token": counts["spikes"],
        "spikes_per_synapse": counts["spikes_per_synapse"],
        "spike_rate": counts["spike_rate"],
        "break_even": break_even(counts),
        "notes": [],
    }
    return _finish(row, comps)


def break_even(counts: dict) -> dict:
    sps, rate = counts["spikes_per_synapse"], counts["spike_rate"]
    be = BREAK_EVEN["dampfhoffer2023"]
    damp = "below" if sps < be["low"] else ("within" if sps <= be["high"] else "above")
    yan = "below" if rate < BREAK_EVEN["yan2024"]["threshold_t5"] else (
        "between" if rate < BREAK_EVEN["yan2024"]["threshold"] else "above")
    return {"spikes_per_synapse": sps, "dampfhoffer2023_range": [be["low"], be["high"]], "dampfhoffer2023": damp,
            "spike_rate": rate, "yan2024_threshold": [BREAK_EVEN["yan2024"]["threshold_t5"],
                                                      BREAK_EVEN["yan2024"]["threshold"]], "yan2024": yan,
            "binary_spikes": not counts["synaptic_events_graded_coding"]}


DENSE_VARIANTS = ("recurrent-fp32", "parallel-fp32", "recurrent-int8", "recurrent-sparse-fp32")


def price_dense(dims, profile: Profile, variant: str, seq_len: int | None = None, density: dict | None = None,
                fallback="auto") -> dict:
    """Energy per token of the dense model (one variant) on one (conventional) profile."""
    P = _Prices(profile, fallback)
    if variant not in DENSE_VARIANTS:
        raise ConfigError(f"unknown dense variant {variant!r}: use one of {', '.join(DENSE_VARIANTS)}")
    sparse = variant.endswith("sparse-fp32")
    if sparse and density is None:
        raise ConfigError("the activation-sparse dense baseline needs measured densities")
    form = variant.split("-")[0]
    macs = dense_macs(dims, form, seq_len, density if sparse else None)
    ew = dense_elementwise(dims, density if sparse else None)
    mac_name = "mac_int8" if variant.endswith("int8") else "mac"
    mac, mac_note = P.mac(mac_name)
    add, anote = P.arith("add")
    mult, mnote = P.arith("mult")
    comps = {
        "mac": _component(macs, mac, mac_note, f"no '{mac_name}'"),
        "arithmetic_add": _component(ew["adds"], add, anote, "no 'add', 'flop' or fallback"),
        "arithmetic_mult": _component(ew["mults"], mult, mnote, "no 'mult', 'flop' or fallback"),
    }
    notes = []
    if variant.endswith("int8"):
        notes.append("int8 dense baseline: MACs in INT8 (mac_int8); LayerNorm and elementwise ops kept in FP32")
    if sparse:
        notes.append("activation-sparse dense baseline: state read/write skip zero q columns, decoder skips zero "
                     "gated values (densities measured on the dense model, same text)")
    row = {
        "kind": "dense",
        "backend": "dense",
        "variant": variant,
        "profile": profile.key or profile.name,
        "profile_name": profile.name,
        "device_kind": profile.kind,
        "macs_per_token": macs,
        "synaptic_events_per_token": None,
        "graded_synaptic_events_per_token": None,
        "neuron_updates_per_token": None,
        "plastic_updates_per_token": None,
        "spikes_per_token": None,
        "notes": notes,
    }
    if sparse:
        row["density"] = dict(density)
    return _finish(row, comps)


# ---------------------------------------------------------------------------------------------
# Running


def compare_event_counts(results: dict) -> dict:
    """{backend: SimulationResult} -> whether every event count is identical, and the largest difference."""
    names = list(results)
    out = {"backends": names, "identical": True, "max_abs_difference": 0.0, "max_rel_difference": 0.0,
           "worst_key": None, "compared": len(names) > 1}
    if len(names) < 2:
        return out
    base = results[names[0]]
    for name in names[1:]:
        other = results[name]
        for key in COUNT_KEYS:
            a = _total(base, key)
            b = _total(other, key)
            diff = abs(a - b)
            if diff > out["max_abs_difference"]:
                out.update(max_abs_difference=diff, max_rel_difference=diff / max(abs(a), 1e-300),
                           worst_key=f"{key} ({names[0]} vs {name})")
    out["identical"] = out["max_abs_difference"] == 0.0
    return out


def _total(result, key) -> float:
    if key in result.stats:
        return float(result.stats[key].sum())
    return float(result.events[key])


def estimate(model, net, token_ids, backends=("reference",), profiles="all", timesteps: int = 8,
             coding: str = "rate", mode: str = "discrete", max_spikes: int = 4, device="cpu",
             dtype=torch.float64, text_name: str = "token ids", progress: bool = False,
             backend_options: dict | None = None, log=None) -> "EnergyReport":
    """Simulates ``net`` on every backend, counts events, prices them per profile; dense baselines too."""
    from .backends import parse_backends, simulate

    ids = torch.as_tensor(token_ids, dtype=torch.int64)
    if ids.dim() == 1:
        ids = ids[None]
    backends = parse_backends(backends)
    profs = parse_profiles(profiles)
    fallback = _fallback()
    results, counts = {}, {}
    for backend in backends:
        if log:
            log(f"running {backend}: coding={coding} T={timesteps} mode={mode} ({int(ids.numel())} tokens)")
        opts = (backend_options or {}).get(backend, {})
        res = simulate(net, ids, backend=backend, timesteps=timesteps, coding=coding, mode=mode, device=device,
                       max_spikes=max_spikes, dtype=dtype, progress=progress, **opts)
        results[backend] = res
        counts[backend] = spiking_counts(res, net)
    rows = []
    for backend in backends:
        for p in sorted(profs, key=lambda p: p.kind != "neuromorphic"):  # stable: keeps the user's order
            row = price_spiking(counts[backend], p, fallback)
            row["backend"] = backend
            rows.append(row)
    if log:
        log("measuring activation density of the dense model")
    density = dense_activity(model, ids) if model is not None else None
    dense_profiles = [load_profile(n) for n in DENSE_PROFILES if n in list_profiles()]
    keys = {(p.key, str(p.path)) for p in dense_profiles}
    dense_profiles += [p for p in profs if p.kind == "conventional" and (p.key, str(p.path)) not in keys]
    seq_len = int(ids.shape[1])
    for p in dense_profiles:
        for variant in DENSE_VARIANTS:
            if variant.endswith("sparse-fp32") and density is None:
                continue
            rows.append(price_dense(net.dims, p, variant, seq_len=seq_len, density=density, fallback=fallback))
    ref = next((r for r in rows if r["kind"] == "dense" and r["variant"] == "recurrent-fp32"
                and r["profile"] == FALLBACK_PROFILE), None)
    for r in rows:
        e = r["energy_per_token_j"] if r["energy_per_token_j"] is not None else r["energy_per_token_lower_bound_j"]
        r["ratio_vs_dense_45nm"] = (e / ref["energy_per_token_j"]) if ref and ref["energy_per_token_j"] else None
    cross = compare_event_counts(results)
    d = net.dims
    meta = {
        "bdh_spiking_version": __version__,
        "torch": torch.__version__,
        "host": platform.node(),
        "model": getattr(model, "provenance", {}).get("checkpoint", "in-memory model") if model is not None
        else net.provenance.get("checkpoint"),
        "dims": d,
        "gating": net.gating,
        "text": {"name": text_name, "tokens": int(ids.numel()), "sequences": int(ids.shape[0]), "seq_len": seq_len},
        "timesteps": timesteps,
        "coding": coding,
        "mode": mode,
        "max_spikes": max_spikes if coding == "multispike" else None,
        "backends": backends,
        "profiles": [{"key": p.key, "name": p.name, "kind": p.kind, "path": str(p.path)} for p in profs],
        "dense_profiles": [p.key for p in dense_profiles],
        "dense_density": density,
        "dense_macs_per_token": {"recurrent": dense_macs(d, "recurrent"),
                                 "parallel": dense_macs(d, "parallel", seq_len)},
        "break_even": BREAK_EVEN,
        "cross_backend": cross,
        "counts": {b: counts[b] for b in backends},
        "counting_rules": "docs/energy.md",
    }
    return EnergyReport(meta, rows)


# ---------------------------------------------------------------------------------------------
# Output


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
        text = json.dumps(self.to_dict(), indent=1, default=_jsonable)
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
                 f"| coding {m['coding']}, T={m['timesteps']}, mode {m['mode']}, gating {m['gating']}")
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
        ax.set_title(f"BDH spiking vs dense: energy per token ({m['coding']}, T={m['timesteps']}, "
                     f"{m['text']['tokens']} tokens)", fontsize=9)
        ax.grid(axis="x", alpha=0.3, which="both")
        fig.tight_layout()
        path = out_dir / "energy_per_token.png"
        fig.savefig(path, dpi=120)
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
