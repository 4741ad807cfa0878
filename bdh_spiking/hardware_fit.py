"""Does the spiking network fit on a chip? Cores and chips from a hardware profile's [capacity].

``fit(net, profile)`` places every population of the network (per layer and head) on neuromorphic
cores under the profile's per-core limits and reports the cores and chips needed, and which
populations or projections do not fit and why. ``fit_all(net)`` does it for every shipped profile
with capacity data; ``table(reports)`` prints them.

Placement model (deliberately simple, stated so the numbers can be checked by hand):

* Each population is split over cores of its own (no two populations share a core). A neuron's
  synapses live on its core (fan-in state, Loihi's convention): ``bytes per neuron =
  ceil(fan_in * bits / 8)`` with ``bits`` the weight width (static synapses) or the plastic state
  width (plastic synapses).
* Neurons per core = min(``neurons_per_core``, floor(``synaptic_memory_bytes_per_core`` (or
  ``memory_bytes_per_core``) / bytes per neuron), floor(``synapses_per_core`` / fan-in)); cores =
  ceil(neurons / neurons per core). A neuron whose own fan-in needs more than one core's memory, a
  fan-in larger than ``input_axons_per_core`` (all neurons of a population share their presynaptic
  sources: dense projections), weights wider than ``weight_bits`` or graded messages wider than
  ``graded_spike_payload_bits`` (0: binary spikes only) do not fit.
* Chips = max(ceil(cores / cores_per_chip), ceil(neurons / neurons_per_chip),
  ceil(synapses / synapses_per_chip), ceil(synaptic bytes / sdram_bytes_per_chip)) over the limits the
  profile gives; a limit the profile lacks is listed under ``not_checked``, never assumed.

Populations (per layer l and head h unless said): ``x`` (N IF neurons, fan-in D: E folded by theta_x),
``y`` (N IF neurons, fan-in D: E_v folded by theta_y, +1 gate synapse with gain gating), ``attn`` (D
graded units holding the plastic synapses S of the head: fan-in N plastic synapses, then LayerNorm),
per layer ``residual`` (D graded units, fan-in H*N: the decoder) and, with product gating, ``product``
(H*N graded nodes, fan-in 2, no stored weights); once: ``embed`` (D graded units, fan-in V: the
embedding table) and ``readout`` (V graded units, fan-in D: lm_head). The shared encoder, value
encoder and decoder are stored once per layer (the thresholds folded into E and E_v differ per layer).
Widths come from the network's quantization (``conversion.quantize``) or, for a float network, the
quantize() defaults (8-bit weights, 32-bit plastic state, 24-bit payloads), said in ``assumptions``.
"""

from __future__ import annotations

import math

from .profiles import Profile, load_all, load_profile

__all__ = ["fit", "fit_all", "table", "parse_fit_profiles", "fit_lava_graph", "graph_table"]

LIMITS = ("cores_per_chip", "neurons_per_core", "synaptic_memory_bytes_per_core", "memory_bytes_per_core",
          "synapses_per_core", "input_axons_per_core", "weight_bits", "graded_spike_payload_bits",
          "neurons_per_chip", "synapses_per_chip", "sdram_bytes_per_chip")
CORE_LIMITS = ("neurons_per_core", "synaptic_memory_bytes_per_core", "memory_bytes_per_core", "synapses_per_core")


def _widths(net) -> tuple[dict, list]:
    from .network import FixedPointFormat

    fmt = net.quantization.format if net.quantization is not None else None
    if fmt is not None:
        return {"weight_bits": fmt.weight_bits, "plastic_bits": fmt.plastic_bits, "payload_bits": fmt.payload_bits}, []
    fmt = FixedPointFormat()
    return ({"weight_bits": fmt.weight_bits, "plastic_bits": fmt.plastic_bits, "payload_bits": fmt.payload_bits},
            ["float network: widths of the quantize() defaults (8-bit weights, 32-bit plastic state, "
             "24-bit graded payloads)"])


def populations(net, widths: dict) -> list[dict]:
    """Every population to place: name, neurons, fan-in, bits per synapse, kind, graded?"""
    d = net.dims
    L, H, D, N, V = d.L, d.H, d.D, d.N, d.V
    wb, pb = widths["weight_bits"], widths["plastic_bits"]
    gain = net.gating == "gain"
    pops = [{"name": "embed", "projection": "embedding", "neurons": D, "fan_in": V, "bits": wb, "graded": True}]
    for layer in range(L):
        for h in range(H):
            pops.append({"name": f"layer{layer}.head{h}.x", "projection": "E", "neurons": N, "fan_in": D, "bits": wb,
                         "graded": False})
            pops.append({"name": f"layer{layer}.head{h}.attn", "projection": "hebbian (plastic)", "neurons": D,
                         "fan_in": N, "bits": pb, "graded": True})
            pops.append({"name": f"layer{layer}.head{h}.y", "projection": "E_v" + (" + gate" if gain else ""),
                         "neurons": N, "fan_in": D + (1 if gain else 0), "bits": wb, "graded": False})
        if not gain:
            pops.append({"name": f"layer{layer}.product", "projection": "gate (a * b)", "neurons": H * N, "fan_in": 2,
                         "bits": 0, "graded": True})
        pops.append({"name": f"layer{layer}.residual", "projection": "D (decoder)", "neurons": D, "fan_in": H * N,
                     "bits": wb, "graded": True})
    pops.append({"name": "readout", "projection": "lm_head", "neurons": V, "fan_in": D, "bits": wb, "graded": True})
    return pops


def _cap(profile: Profile, name: str):
    e = profile.capacity.get(name)
    return None if e is None else e.value


def fit(net, profile) -> dict:
    """The hardware-fit report of ``net`` on one profile (a Profile, a shipped name or a .toml path)."""
    if not isinstance(profile, Profile):
        profile = load_profile(profile)
    widths, assumptions = _widths(net)
    cap = {k: _cap(profile, k) for k in LIMITS}
    out = {"profile": profile.key or profile.name, "device": profile.name, "widths": widths,
           "assumptions": list(assumptions), "not_checked": [], "limits": {k: v for k, v in cap.items() if v is not None},
           "unverified_limits": [k.split(".", 1)[1] for k in profile.unverified() if k.startswith("capacity.")]}
    if not profile.capacity:
        out.update(has_capacity=False, fits=None, populations=[], does_not_fit=[],
                   note="the profile has no [capacity] data")
        return out
    out["has_capacity"] = True
    mem_key = "synaptic_memory_bytes_per_core" if cap["synaptic_memory_bytes_per_core"] is not None else (
        "memory_bytes_per_core" if cap["memory_bytes_per_core"] is not None else None)
    if mem_key == "memory_bytes_per_core":
        out["assumptions"].append("memory_bytes_per_core (code, state and synapses together) used as the synaptic "
                                  "budget: an upper bound on what fits")
    for k in LIMITS:
        if cap[k] is None and not (k in ("synaptic_memory_bytes_per_core", "memory_bytes_per_core") and mem_key):
            out["not_checked"].append(k)
    rows, problems = [], []
    for pop in populations(net, widths):
        n, f, bits = pop["neurons"], pop["fan_in"], pop["bits"]
        bytes_per = math.ceil(f * bits / 8)
        row = dict(pop, synapses=n * f if bits else 0, bytes_per_neuron=bytes_per, synaptic_bytes=n * bytes_per)
        why = []
        if cap["weight_bits"] is not None and bits and pop["projection"] != "hebbian (plastic)" \
                and bits > cap["weight_bits"]:
            why.append(f"weights need {bits} bits, the device stores at most {int(cap['weight_bits'])}")
        if pop["graded"] and cap["graded_spike_payload_bits"] is not None and \
                widths["payload_bits"] > cap["graded_spike_payload_bits"]:
            have = int(cap["graded_spike_payload_bits"])
            why.append(f"graded messages of {widths['payload_bits']} bits, the device carries "
                       + ("binary spikes only" if have == 0 else f"at most {have}-bit payloads"))
        if cap["input_axons_per_core"] is not None and f > cap["input_axons_per_core"]:
            why.append(f"fan-in {f} exceeds input_axons_per_core {int(cap['input_axons_per_core'])}")
        per_core = []
        if cap["neurons_per_core"] is not None:
            per_core.append((int(cap["neurons_per_core"]), "neurons_per_core"))
        if mem_key and bytes_per:
            per_core.append((int(cap[mem_key] // bytes_per), mem_key))
            if bytes_per > cap[mem_key]:
                why.append(f"one neuron's fan-in needs {bytes_per} bytes, more than {mem_key} {int(cap[mem_key])}")
        if cap["synapses_per_core"] is not None and bits:
            per_core.append((int(cap["synapses_per_core"] // f), "synapses_per_core"))
            if f > cap["synapses_per_core"]:
                why.append(f"fan-in {f} exceeds synapses_per_core {int(cap['synapses_per_core'])}")
        if per_core:
            k, limit = min(per_core)
            row["neurons_per_core"], row["core_limit"] = k, limit
            row["cores"] = math.ceil(n / k) if k > 0 else None
        else:
            row["neurons_per_core"], row["core_limit"], row["cores"] = None, None, None
        row["fits"] = not why and (row["cores"] is not None or not per_core)
        row["why_not"] = why
        if why:
            problems.append(f"{pop['name']} ({pop['projection']}): " + "; ".join(why))
        rows.append(row)
    totals = {"neurons": sum(r["neurons"] for r in rows), "synapses": sum(r["synapses"] for r in rows),
              "plastic_synapses": sum(r["synapses"] for r in rows if r["projection"] == "hebbian (plastic)"),
              "synaptic_bytes": sum(r["synaptic_bytes"] for r in rows)}
    cores = sum(r["cores"] for r in rows if r["cores"] is not None) if all(r["cores"] is not None for r in rows) \
        and any(cap[k] is not None for k in CORE_LIMITS) else None
    totals["cores"] = cores
    chips = {}
    if cap["cores_per_chip"] and cores is not None:
        chips["cores_per_chip"] = math.ceil(cores / cap["cores_per_chip"])
    if cap["neurons_per_chip"]:
        chips["neurons_per_chip"] = math.ceil(totals["neurons"] / cap["neurons_per_chip"])
    if cap["synapses_per_chip"]:
        chips["synapses_per_chip"] = math.ceil(totals["synapses"] / cap["synapses_per_chip"])
    if cap["sdram_bytes_per_chip"]:
        chips["sdram_bytes_per_chip"] = math.ceil(totals["synaptic_bytes"] / cap["sdram_bytes_per_chip"])
    totals["chips"] = max(chips.values()) if chips else None
    totals["chips_by_limit"] = chips
    out.update(populations=rows, totals=totals, does_not_fit=problems, fits=not problems)
    return out


def fit_all(net, profiles=None) -> list[dict]:
    """fit() on every profile given (Profiles or names), default every shipped profile with capacity data."""
    if profiles is None:
        profiles = [p for p in load_all().values() if p.capacity]
    return [fit(net, p) for p in profiles]


def parse_fit_profiles(spec: str) -> list:
    """'all' (every shipped profile with capacity data), NAME[,NAME...] or a .toml path."""
    if spec.strip() == "all":
        return [p for p in load_all().values() if p.capacity]
    return [load_profile(s.strip()) for s in spec.split(",") if s.strip()]


def table(reports: list[dict], details: bool = False) -> str:
    """Human-readable summary: one line per profile, then what does not fit (first few per profile)."""
    lines = ["hardware fit (placement model: bdh_spiking/hardware_fit.py; widths from the quantization)"]
    head = f"{'profile':<12} {'neurons':>10} {'synapses':>12} {'syn MB':>9} {'cores':>7} {'chips':>6}  fits"
    lines += [head, "-" * len(head)]
    for r in reports:
        if not r.get("has_capacity"):
            lines.append(f"{r['profile']:<12} {'-':>10} {'-':>12} {'-':>9} {'-':>7} {'-':>6}  no capacity data")
            continue
        t = r["totals"]
        cores = "-" if t["cores"] is None else f"{t['cores']:,}"
        chips = "-" if t["chips"] is None else f"{t['chips']:,}"
        verdict = "yes" if r["fits"] else f"NO ({len(r['does_not_fit'])} populations)"
        lines.append(f"{r['profile']:<12} {t['neurons']:>10,} {t['synapses']:>12,} {t['synaptic_bytes'] / 2**20:>9.2f} "
                     f"{cores:>7} {chips:>6}  {verdict}")
    for r in reports:
        if r.get("has_capacity") and (r["does_not_fit"] or r["not_checked"] or r["assumptions"]):
            lines.append(f"{r['profile']}:")
            shown = r["does_not_fit"] if details else _dedupe(r["does_not_fit"])
            for p in shown[:8]:
                lines.append(f"  does not fit: {p}")
            if len(shown) > 8:
                lines.append(f"  ... and {len(shown) - 8} more")
            if r["not_checked"]:
                lines.append(f"  not checked (profile lacks): {', '.join(r['not_checked'])}")
            for a in r["assumptions"]:
                lines.append(f"  assumption: {a}")
            if r["unverified_limits"]:
                lines.append(f"  unverified limits: {', '.join(r['unverified_limits'])}")
    return "\n".join(lines)


def _dedupe(problems: list[str]) -> list[str]:
    """Collapse per-layer/head repeats: 'layerI.headJ.x (E): why' -> one line per (kind, why) with a count."""
    import re

    groups = {}
    for p in problems:
        key = re.sub(r"^layer\d+\.", "layer*.", p)
        key = re.sub(r"^layer\*\.head\d+\.", "layer*.head*.", key)
        groups[key] = groups.get(key, 0) + 1
    return [k if c == 1 else f"{k} [x{c}]" for k, c in groups.items()]


# -- the explicit Lava graph (backends/lava/explicit_spec.py) --------------------------------
def fit_lava_graph(spec: dict, profile) -> dict:
    """Cores and chips of the explicit Lava graph's processes (one sequence), from each process's
    neurons, synapses and fan-in under the profile's limits (the placement model above: a
    process on cores of its own; synapses cost their width in bits), and which processes have no
    Loihi 2 model in open-source Lava (ours: they would need neuron microcode), by name."""
    if spec.get("graph") != "explicit":
        raise ValueError("fit_lava_graph reads the explicit graph's description (lava_graph='explicit')")
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    q = (spec.get("quantization") or {}).get("params", {})
    bits = {"static": q.get("weight_bits", 8), "plastic": q.get("plastic_bits", 32)}
    cap = {name: _cap(prof, name) for name in LIMITS}
    rows, problems = [], []
    for p in spec["processes"]:
        neurons, synapses, fan_in = p.get("neurons", 0), p.get("synapses", 0), p.get("fan_in", 0)
        width = bits["plastic"] if p["class"].endswith("PlasticSynapses") else bits["static"]
        cores = 0
        if neurons and cap["neurons_per_core"]:
            cores = math.ceil(neurons / cap["neurons_per_core"])
        memory = cap["synaptic_memory_bytes_per_core"] or cap["memory_bytes_per_core"]
        if synapses and memory:
            cores = max(cores, math.ceil(synapses * width / 8 / memory))
        if synapses and cap["synapses_per_core"]:
            cores = max(cores, math.ceil(synapses / cap["synapses_per_core"]))
        if fan_in and cap["input_axons_per_core"] and fan_in > cap["input_axons_per_core"]:
            problems.append(f"{p['name']}: fan-in {fan_in} > {cap['input_axons_per_core']} input axons per core")
        rows.append({"name": p["name"], "class": p["class"], "neurons": neurons, "synapses": synapses,
                     "fan_in": fan_in, "cores": cores, "lava_model_on_loihi2": p["origin"] == "lava"})
    totals = {k: sum(r[k] for r in rows) for k in ("neurons", "synapses", "cores")}
    chips = [math.ceil(totals[k] / cap[c]) for k, c in (("cores", "cores_per_chip"), ("neurons", "neurons_per_chip"),
                                                        ("synapses", "synapses_per_chip")) if cap[c]]
    return {"profile": prof.key or prof.name, "processes": rows, **totals, "chips": max(chips) if chips else None,
            "problems": problems, "not_checked": [n for n in LIMITS if cap[n] is None],
            "no_loihi2_model": [r["name"] for r in rows if not r["lava_model_on_loihi2"]]}


def graph_table(reports: list[dict]) -> str:
    """``fit_lava_graph`` reports: one line per profile, then the processes that no Loihi 2 model in
    open-source Lava runs (ours) and what does not fit."""
    lines = ["placement of the explicit Lava graph (one process per population and projection):"]
    for r in reports:
        chips = "n/a" if r["chips"] is None else r["chips"]
        lines.append(f"  {r['profile']}: {len(r['processes'])} processes, {r['neurons']} neurons, {r['synapses']} "
                     f"synapses -> {r['cores']} cores, {chips} chip(s)")
        for problem in r["problems"][:5]:
            lines.append(f"    does not fit: {problem}")
    if reports:
        ours = reports[0]["no_loihi2_model"]
        lines.append(f"  no Loihi 2 model in open-source Lava (ours, would need microcode): {', '.join(ours) or 'none'}")
    return "\n".join(lines)

