"""Prices event counts with hardware profiles (``bdh_spiking.profiles``): joules per token of a
spiking run and of the dense model's variants, and the published break-even points.

A profile entry that is absent is *unavailable*, never zero: a row missing one has
``energy_per_token_j = None`` and a lower bound ``energy_per_token_lower_bound_j`` over what is
priced; every assumption made to price a count is written into the row's ``notes``.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..profiles import Profile, list_profiles, load_profile
from .counts import dense_elementwise, dense_macs

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


def fallback_profile() -> Profile | None:
    try:
        return load_profile(FALLBACK_PROFILE)
    except Exception:  # a broken install must not hide the device's own figures
        return None


class _Prices:
    """Joules per counted event for one profile: direct entries, and the documented fallbacks."""

    def __init__(self, profile: Profile, fallback):
        self.profile = profile
        fallback = fallback_profile() if isinstance(fallback, str) and fallback == "auto" else fallback
        self.fb = fallback if (fallback is not None and fallback.key != profile.key) else None

    def entry(self, name):
        e = self.profile.energy.get(name)
        return (e.value, None) if e is not None else (None, None)

    def arith(self, op: str):
        """FP32 add/mult: the profile's own, else its flop, else digital45nm's (noted)."""
        if op in self.profile.energy:
            return self.profile.energy[op].value, None
        if "flop" in self.profile.energy:
            return self.profile.energy["flop"].value, "FP32 adds and multiplies priced as one 'flop' each (no add/mult entry)"
        if self.fb is not None and op in self.fb.energy:
            return self.fb.energy[op].value, (
                f"no arithmetic figure on this device: the non-spiking FP32 adds and multiplies (LayerNorm, residual, "
                f"gating, oscillator phases) priced with {self.fb.key} (Horowitz 2014, 45 nm) -- an assumption")
        return None, None

    def graded(self):
        """One graded synaptic event (payload x weight + accumulate)."""
        if "graded_synaptic_op" in self.profile.energy:
            return self.profile.energy["graded_synaptic_op"].value, None
        if "synaptic_op" in self.profile.energy:
            mult, _ = self.arith("mult")  # the multiply's own fallback is noted with the arithmetic
            if mult is None:
                return None, None
            note = "no 'graded_synaptic_op': a graded event is priced as synaptic_op + one FP32 multiply (payload x weight)"
            return self.profile.energy["synaptic_op"].value + mult, note
        return None, None

    def mac(self, name="mac"):
        if name in self.profile.energy:
            return self.profile.energy[name].value, None
        if name == "mac" and "flop" in self.profile.energy:
            return 2 * self.profile.energy["flop"].value, "FP32 MAC priced as 2 'flop' (no 'mac' entry)"
        return None, None


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
