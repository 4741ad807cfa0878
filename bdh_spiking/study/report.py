"""The study's outputs: results.json (every number) and report.md rendered from it alone, plus
the summary lines bdh-study prints."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .memory import MIN_WORD_LEN

NETWORK_PAIRS = ("dense~reference", "dense~biophysical", "reference~biophysical")


def _f(v, nd=3):
    return "nan" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{nd}f}"


def _c(concept: str) -> str:
    """A concept inside a markdown table cell ('|' separates a concept's forms, and table cells)."""
    return repr(concept).replace("|", "\\|")


def _window(b: dict) -> str:
    w = b["window"]
    return f"{b['tokens']} bytes (passage {w['passage']}, offset {w['offset']}: {w['text']!r})"


def summary_lines(results: dict) -> list[str]:
    """The numbers printed by bdh-study (the test checks they match results.json)."""
    lines = []
    sel = results["selectivity"]
    for name, fams in sel["runs"].items():
        for fam, f in fams.items():
            for level in ("factors", "synapses"):
                found = ", ".join(f"{c!r}={d['byte']['discoveries']}" for c, d in f[level]["per_concept"].items())
                lines.append(f"exp1 {name} {fam} {level} discoveries: {found}")
    lines.append(f"exp1 discoveries={sel['discoveries']} layer0_discoveries={sel['layer0_discoveries']} "
                 f"decoy_discoveries_mean={_f(sel['decoy_discoveries_mean'], 2)}")
    for name, sg in results["sigma"].items():
        lines.append(f"exp1 sigma {name}: variance explained (fitted) " + " ".join(
            f"{k}={_f(sg['explained'][k]['r2_fit'], 3)}" for k in ("phase_free", "value_shuffled", "byte_mean")))
    for cname, row in results["experiment2"]["table"].items():
        lines.append(f"exp2 {cname}: loss_repeat={_f(row['loss_repeat'], 4)} loss_first={_f(row['loss_first'], 4)} "
                     f"context_benefit={_f(row['context_benefit'], 4)}")
    bc = results["experiment2"].get("biophysical_confirm", {})
    if "memory" in bc:
        lines.append("exp2 biophysical window: " + "; ".join(
            f"{c} loss={_f(r['biophysical'], 4)} (reference {_f(r['reference'], 4)})"
            for c, r in bc["memory"]["loss_all"].items()))
    r = results["experiment3"]["rates"]
    lines.append(f"exp3 rates ({r['source']}, {r['token_ms']:g} ms/char): x mean={_f(r['x']['mean_hz'], 3)} Hz "
                 f"silent={_f(r['x']['silent_fraction_never'], 4)}; y mean={_f(r['y']['mean_hz'], 3)} Hz "
                 f"silent={_f(r['y']['silent_fraction_never'], 4)}")
    sp = results["experiment3"]["sparsity"]
    lines.append(f"exp3 dense sparsity: x active={_f(sp['dense_x_active_fraction'], 4)} "
                 f"gated active={_f(sp['dense_gated_active_fraction'], 4)}")
    for key, v in results.get("verdicts", {}).items():
        lines.append(f"claim ({key}): {v['verdict']}: {v['measure']} = {_number(v)}")
    return lines


def _header(res: dict) -> list[str]:
    m = res["meta"]
    st = m["settings"]
    return [
        "# bdh-study report\n",
        f"Model: `{m['model']['path']}` ({m['model']['format']} format, sha256 {str(m['model'].get('sha256'))[:16]}..., "
        f"{m['model'].get('train_steps')} training steps, recorded validation loss {m['model'].get('val_loss')}), "
        f"config `{m['model']['config']}`.  ",
        f"Network: gating {m['network']['gating']}, v_init {m['network']['v_init']}, calibrated on "
        f"{m['network']['calibration']} ({m['network']['calibration_bytes']} bytes).  ",
        f"Backend: reference executor, mode discrete, multispike coding, T = {st['timesteps']} steps per character, "
        f"K = {st['max_spikes']} spikes per step; dense = the float64 parallel form (graded T=1 is exactly dense).  ",
        f"Biophysical mode: {m['biophysical']['message']}.  ",
        f"Text: {m['text']}, {m['tokens']} bytes as {m['passages']} passages of {m['seq_len']} (plastic state "
        f"reset at each passage).  ",
        f"Seed: {st['seed']}; quick: {st['quick']}; token time {st['token_ms']:g} ms "
        f"({1000 / st['token_ms']:g} characters/s), simulation step {st['dt_ms']:g} ms; wall time {m['wall_s']:.0f} s; "
        f"bdh_spiking {m['bdh_spiking']}, torch {m['torch']}.\n",
        "Every number below is in `results.json` of the same run; definitions and limits: docs/study.md.\n",
    ]


def _selectivity_intro(res: dict) -> list[str]:
    m, sel = res["meta"], res["selectivity"]
    forms = m.get("concept_forms", {})
    return [
        "## 1. Synapses that carry concepts\n",
        f"Concepts ({m['concepts_source']}): " + ", ".join(
            f"{c!r} ({m['concept_occurrences'][c]} occurrences, {m['concept_tokens'][c]} tokens; forms "
            + ", ".join(f"{k!r} x{v}" for k, v in forms.get(c, {}).items()) + ")" for c in m["concepts"]) + ".\n",
        "Two families of plastic synapse, both with per-token increments that factorise: **S** (executed, "
        "residual unit d <- x-neuron pair k): |x_t[d]| * ||a_t(pair k)||, factors 'residual' and 'pair'; "
        "**sigma** (the read-path neuron-to-neuron state E_v^T S, x neuron i -> y neuron j, phases dropped): "
        "|v_t[j]| * a_t[i] with v = E_v^T x, factors 'y' and 'x'. Every factor is tested; synapses on a seeded "
        f"sample of {sel['synapse_sample_per_layer']} per layer and family (the same synapses in every run).\n",
        f"Null: {sel['null']}. Family-wise level {sel['alpha']}, {sel['permutations']} permutations per label; "
        f"layers {sel['layers']}; decoy shifts (tokens) {sel['decoy_shifts']}.\n",
        "Concept tokens that fall in informative strata (strata holding tokens with and without the concept; "
        "only these carry the test): " + "; ".join(
            f"{kind}: " + ", ".join(f"{c!r} {n}" for c, n in v.items())
            for kind, v in sel["informative_concept_tokens"].items()) + ".\n",
        "Candidates testable in layer 0 (a nonzero within-stratum variance), summed over runs, families, levels and "
        f"concepts: {_layer0_testable(sel)} (layer 0 is a function of the byte: 0 expected).\n",
        f"**Discoveries (main null, all runs, families, levels and concepts): {sel['discoveries']}; in layer 0: "
        f"{sel['layer0_discoveries']}; decoys: {_f(sel['decoy_discoveries_mean'], 2)} on average over the "
        f"{len(sel['decoy_shifts'])} shifts (per shift {sel['decoy_discoveries_per_shift']}).**\n",
    ]


def _layer0_testable(sel: dict) -> str:
    if 0 not in sel["layers"]:
        return "layer 0 not analysed"
    return str(sum(d["byte"]["testable_per_layer"].get("0", 0) for fams in sel["runs"].values()
                   for f in fams.values() for level in ("factors", "synapses")
                   for d in f[level]["per_concept"].values()))


def _selectivity_tables(res: dict) -> list[str]:
    sel = res["selectivity"]
    lines = ["| run | family | level | concept | candidates | testable | discoveries (byte null) | per layer | "
             "global p | max z | max stratified AUROC | discoveries (bigram null) | decoy mean | top (z) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run, fams in sel["runs"].items():
        for fam, f in fams.items():
            for level in ("factors", "synapses"):
                for c, d in f[level]["per_concept"].items():
                    b, top = d["byte"], (d["byte"]["top"] or [None])[0]
                    lines.append(
                        f"| {run} | {fam} | {level} | {_c(c)} | {f[level]['candidates']} | {b['testable']} | "
                        f"{b['discoveries']} | {b['per_layer']} | {_f(b['global_p'])} | {_f(b['max_z'], 2)} | "
                        f"{_f(b['max_auroc'])} | {d['bigram']['discoveries']} | {_f(d['decoy']['discoveries_mean'], 2)} | "
                        f"{top['id'] if top else '-'} ({_f(top['z'], 2) if top else '-'}) |")
    lines.append("\nDiscovered synapses with at least one discovered factor (byte null): " + "; ".join(
        f"{run} {fam}: " + ", ".join(f"{c!r} {_f(v, 2)}" for c, v in f["synapses"]["with_selective_factor"].items())
        for run, fams in sel["runs"].items() for fam, f in fams.items()) + ".\n")
    return lines + _sigma_lines(res)


def _sigma_lines(res: dict) -> list[str]:
    lines = ["### sigma on the read path\n",
             "z_t = LN(S_t q_t) E_v = sigma_t q_t / sqrt(var(S_t q_t) + eps) with sigma_t = E_v^T S_t (N x N per head, "
             "x neuron -> y neuron, value-bearing): exact, because each x_s leaves a LayerNorm (identity checked, max "
             "relative error below). Variance of the y drive z explained (R^2 over tokens and y neurons, first "
             "token of each passage left out) by: sigma without the oscillator phases (phase_free); the same keys "
             "with another passage's values (value_shuffled: the key covariance, the earlier report's sigma); the "
             "leave-one-out mean over tokens with the same byte (byte_mean).\n",
             "Per predictor: R^2 as predicted (no fitting) and, in brackets, the variance a least-squares rescaling "
             "explains (the squared pooled correlation).\n",
             "| run | tokens | phase_free | value_shuffled | byte_mean | per layer, fitted (phase_free / "
             "value_shuffled / byte_mean) | identity error |", "|---|---|---|---|---|---|---|"]
    for run, sg in res["sigma"].items():
        e = sg["explained"]
        per = "; ".join(f"l{k}: " + "/".join(_f(v[p]["r2_fit"], 2) for p in ("phase_free", "value_shuffled", "byte_mean"))
                        for k, v in sg["per_layer"].items())
        lines.append(f"| {run} | {sg['tokens']} | " + " | ".join(
            f"{_f(e[p]['r2'])} ({_f(e[p]['r2_fit'])})" for p in ("phase_free", "value_shuffled", "byte_mean"))
            + f" | {per} | {sg['identity_max_rel_error']:.1e} |")
    return lines + [""]


def _selectivity_overlap(res: dict) -> list[str]:
    concepts, st, e1 = res["meta"]["concepts"], res["meta"]["settings"], res["experiment1"]
    lines = [f"Top-{st['top_k']} overlap of the sampled synapses (fraction shared, by z under the byte null):\n",
             "| pair of variants | kind | " + " | ".join(_c(c) for c in concepts) + " |",
             "|---|---|" + "---|" * len(concepts)]
    for variants, ov in e1["top_k_overlap"].items():
        for kind in ("increments", "sigma"):
            lines.append(f"| {variants} | {kind} | " + " | ".join(_f(ov[kind][c], 2) for c in concepts) + " |")
    return lines


def _selectivity_biophysical(res: dict) -> list[str]:
    b1 = res["experiment1"].get("biophysical", {})
    if "selectivity" not in b1:
        return [f"\nBiophysical network: {b1.get('error') or b1.get('not_run')}."]
    lines = [f"\nSame synapses in the brian2 biophysical network? On {_window(b1)} (the window closest to half "
             "concept bytes), each network's x->residual synapses are scored by their mean frame-free increment on "
             "the concept's bytes minus on the other bytes (too few bytes for the AUROC null above); top-"
             f"{res['meta']['settings']['top_k']} overlap and the correlation of the scores over all synapses:\n",
             "| concept | concept bytes | overlap dense~ref | dense~bio | ref~bio | corr dense~ref | dense~bio | ref~bio |",
             "|---|---|---|---|---|---|---|---|"]
    for c, d in b1["selectivity"].items():
        o, r_ = d["top_k_overlap"], d["score_correlation"]
        lines.append(f"| {_c(c)} | {d['concept_bytes']} | " + " | ".join(_f(o[k], 2) for k in NETWORK_PAIRS) + " | "
                     + " | ".join(_f(r_[k], 3) for k in NETWORK_PAIRS) + " |")
    if not b1["selectivity"]:
        lines.append("(no concept both occurs in the window and leaves bytes without it)")
    return lines


def _selectivity_section(res: dict) -> list[str]:
    return (_selectivity_intro(res) + _selectivity_tables(res) + _selectivity_overlap(res)
            + _selectivity_biophysical(res)
            + ["\n![selective synapses](selectivity_counts.png)\n"] + _increments_figure(res))


def _increments_figure(res: dict) -> list[str]:
    inc = res.get("increments_figure") or {}
    if not inc.get("concepts"):
        return []
    lines = [f"Increments figure: {inc['quantity']}, the quantity experiment 1 scores, for each concept's top synapses "
             f"and a {inc['rule']}. Mean increment inside / outside the concept's bytes (whole run):\n",
             "| concept | top synapse | in | out | control synapse | in | out |", "|---|---|---|---|---|---|---|"]
    for c, d in inc["concepts"].items():
        t, k = d["top"][0], d["control"]
        lines.append(f"| {c!r} | {t['synapse']} | {_f(t['mean_in_concept'])} | {_f(t['mean_outside'])} | "
                     f"{k['synapse']} | {_f(k['mean_in_concept'])} | {_f(k['mean_outside'])} |")
    return lines + ["\n![increments](increments.png)\n"]


def _memory_biophysical(e2: dict) -> list[str]:
    bc = e2.get("biophysical_confirm", {})
    if "memory" not in bc:
        return [f"Biophysical confirmation: {bc.get('error') or bc.get('not_run')}.\n"]
    mem = bc["memory"]
    lines = [f"Chosen points in the brian2 biophysical network ({_window(bc)}, {bc['token_ms']:g} ms per byte), next "
             "to the reference executor on the same bytes; loss over the window's targets (too few word repeats in "
             "so short a window to split first/repeat, so the whole window's loss and its change against intact "
             f"plasticity are compared). Dense model, intact: {_f(mem['dense_intact'])}.\n",
             "| condition | reference loss | biophysical loss | reference - intact | biophysical - intact |",
             "|---|---|---|---|---|"]
    for cname, row in mem["loss_all"].items():
        lines.append(f"| {cname} | {_f(row['reference'])} | {_f(row['biophysical'])} | "
                     f"{_f(row['reference_minus_intact'])} | {_f(row['biophysical_minus_intact'])} |")
    return lines + [""]


def _ci(r: dict, key: str) -> str:
    lo, hi = r[f"{key}_ci95"]
    return f"{_f(r[key])} [{_f(lo)}, {_f(hi)}]"


def _memory_intro(e2: dict) -> list[str]:
    u = e2["units"]
    return [
        "## 2. Is the memory in the synapses?\n",
        f"{e2['passages']} passages; {u['words']} words of >= {MIN_WORD_LEN} letters recur (byte-identical) within a "
        f"passage, with {u['repeat']} repeats. The unit of analysis is the word: its first occurrence's loss and the "
        "mean loss of its repeats, on the same bytes (a unit's letters after its first). raw benefit = loss(first) - "
        f"loss(repeat), paired within each word; context benefit = a condition's raw benefit minus the baseline's for "
        f"the same word. Baseline: **{e2['baseline']}** ({e2['conditions'].get(e2['baseline'], '')}). "
        f"{e2['lesion']} (S = 0: the y neurons are silent, a lesion of the whole read-out pathway, not of memory "
        "alone) is kept as a labelled lesion. 95% intervals: percentile bootstrap over words "
        f"({e2['n_boot']} resamples), one resample shared by every condition (paired); the last column is the "
        f"raw benefit's interval when first occurrences and repeats are resampled independently. Executor: "
        f"{e2['executor']}.\n",
    ]


def _memory_table(e2: dict) -> list[str]:
    lines = ["| condition | y active | loss all | loss first | loss repeat | raw benefit [95% CI] | context benefit "
             "[95% CI] | repeat gain vs baseline [95% CI] | raw benefit, unpaired CI |",
             "|---|---|---|---|---|---|---|---|---|"]
    for cname, r in list(e2["table"].items()) + [("dense (intact, float64)", e2["dense_intact"])]:
        y = r.get("y_active_fraction")
        lines.append(f"| {cname} | {'-' if y is None else f'{y:.1%}'} | {_f(r['loss_all'])} | {_f(r['loss_first'])} | "
                     f"{_f(r['loss_repeat'])} | {_ci(r, 'raw_benefit')} | {_ci(r, 'context_benefit')} | "
                     f"{_ci(r, 'repeat_gain_vs_baseline')} | [{_f(r['raw_benefit_unpaired_ci95'][0])}, "
                     f"{_f(r['raw_benefit_unpaired_ci95'][1])}] |")
    return lines


def _memory_replaced(e2: dict) -> list[str]:
    r = e2.get("first_occurrence_replaced")
    if not r:
        return []
    c = e2.get("intact_by_passage")
    by_passage = [] if not c else [
        f"\nResampling whole passages instead of words ({c['passages_with_words']} passages hold recurring words; the "
        f"words of one passage share its S), the intact raw benefit's interval is [{_f(c['raw_benefit_ci95'][0])}, "
        f"{_f(c['raw_benefit_ci95'][1])}] and the context benefit's [{_f(c['context_benefit_ci95'][0])}, "
        f"{_f(c['context_benefit_ci95'][1])}]" + (" (too few passages for this interval to mean much)."
                                                 if c["passages_with_words"] < 10 else ".")]
    return by_passage + [f"\nEarlier occurrence replaced: intact plasticity on the same passages with the first occurrence of every "
            "recurring word replaced by random letters of the same case (every other byte as it was: pathway and "
            f"local context alive, only the earlier occurrence gone). Repeats lose {_ci(r, 'repeat_gain')} nats/byte "
            f"against intact, paired by word (repeat loss {_f(r['loss_repeat'])}; y active "
            f"{r['y_active_fraction']:.1%})."]


def _tau(v) -> str:
    """A hold time: inf (not reached within the sweep) is a result here, not a missing value."""
    return "inf" if isinstance(v, float) and math.isinf(v) else _f(v, 2)


def _memory_decay(e2: dict) -> list[str]:
    lines = ["\nDecay: S is multiplied by exp(-1/tau_tokens) per character. A trace's decay depends on tau_ms / "
             "token_ms only, so the taus in ms and the presentation rates are one axis, tau_tokens; each row lists "
             "the (characters/s, tau ms) settings that map onto it.\n",
             "| tau tokens | settings (chars/s: tau ms) | context benefit [95% CI] |", "|---|---|---|"]
    for r in e2["decay"]:
        st = ", ".join(f"{o['chars_per_s']:g}: {o['tau_ms']:g}" for o in r["settings"])
        lines.append(f"| {r['tau_tokens']:g} | {st} | {_ci(r, 'context_benefit')} |")
    h = e2["hold_time"]
    if h.get("tau_half_tokens") is None:
        lines.append(f"\nHold time: not measured: {h['why_none']}.")
    else:
        lo, hi = h["tau_half_tokens_ci95"]
        cens = f" ({h['tau_half_censored']})" if h.get("tau_half_censored") else ""
        det = h["detectable_from_tau_tokens"]
        lines.append(f"\nHold time against the {h['floor']} floor: the context benefit reaches half the intact one "
                     f"({_f(h['intact_context_benefit'])}) at tau_half = {_tau(h['tau_half_tokens'])} tokens{cens}, 95% "
                     f"CI [{_tau(lo)}, {_tau(hi)}] (inf: not reached within the sweep); the smallest tau whose benefit "
                     f"interval lies above the floor: {'none' if det is None else f'{det:g} tokens'}. In ms: tokens x "
                     "token_ms (e.g. x 100 at 10 characters/s): a relabelling, the network has no other clock.")
    return lines + ["\n![benefit vs tau_tokens](memory_vs_tau_tokens.png)\n"]


def _memory_section(res: dict) -> list[str]:
    e2 = res["experiment2"]
    return _memory_intro(e2) + _memory_table(e2) + _memory_replaced(e2) + _memory_decay(e2) + _memory_biophysical(e2)


def _calibration(r: dict) -> str:
    cal = r.get("calibration") or {}
    return (f"{cal.get('bytes')} bytes of the shipped calibration text, recorded by the conversion as "
            f"{cal.get('text')!r}" if cal else "the conversion's calibration text")


def _rates_tables(e3: dict) -> list[str]:
    r = e3["rates"]
    lines = [f"Source: {r['source']} run. Conversion: {r['conversion']} with token_ms = {r['token_ms']:g} "
             f"(at most {r['max_possible_hz']:g} Hz: T*K spikes per token). **The Hz are set by two choices, not "
             f"measured in time**: the token time (rates scale as 1/token_ms) and the spike counts per character, "
             f"which the conversion's thresholds set (calibrated on {_calibration(r)}); per character an x neuron "
             f"fires {_f(r['x']['mean_spikes_per_token'], 2)} spikes on average, a y neuron "
             f"{_f(r['y']['mean_spikes_per_token'], 2)}, whatever token_ms is.\n",
             "| population | mean Hz | median Hz | p90 Hz | max Hz | never fire | silent per token | in 0.1-10 Hz |",
             "|---|---|---|---|---|---|---|---|"]
    for pop in ("x", "y"):
        p = r[pop]
        lines.append(f"| {pop} | {_f(p['mean_hz'], 2)} | {_f(p['median_hz'], 2)} | {_f(p['p90_hz'], 2)} | "
                     f"{_f(p['max_hz'], 1)} | {p['silent_fraction_never']:.1%} | {p['silent_fraction_per_token']:.1%} | "
                     f"{p['in_cortical_band_fraction']:.1%} |")
    bio = e3.get("biophysical", {})
    if "x" not in bio:
        return lines + [f"\nbrian2 biophysical run: {bio.get('error') or bio.get('not_run')}."]
    lines += [f"\nbrian2 biophysical run (LIF, physical units) on {_window(bio)} at {r['token_ms']:g} ms per "
              f"byte ({bio['wall_s']['intact']:.0f} s wall), next to the discrete network on the same bytes:\n",
              "| population | biophysical mean Hz | biophysical never fire | discrete mean Hz (same bytes) | "
              "discrete never fire |",
              "|---|---|---|---|---|"]
    for pop in ("x", "y"):
        b, d = bio[pop], bio[f"{pop}_discrete_same_tokens"]
        lines.append(f"| {pop} | {_f(b['mean_hz'], 2)} | {b['silent_fraction_never']:.1%} | {_f(d['mean_hz'], 2)} | "
                     f"{d['silent_fraction_never']:.1%} |")
    return lines


def _pci(sp: dict, run: str) -> str:
    ci = sp.get(f"{run}_x_active_fraction_ci95")
    return f" [95% CI over {sp['passages']} passages: {ci[0]:.1%}, {ci[1]:.1%}]" if ci else ""


def _rates_section(res: dict) -> list[str]:
    e3 = res["experiment3"]
    sp = e3["sparsity"]
    lines = ["## 3. Is the activity biological?\n"] + _rates_tables(e3)
    lines += [f"\nDense activation sparsity: x neurons > 0 in {sp['dense_x_active_fraction']:.1%}{_pci(sp, 'dense')} of "
              "(neuron, token) "
              f"(per layer {', '.join(f'{v:.1%}' for v in sp['dense_x_active_fraction_per_layer'])}); gated values > 0: "
              f"{sp['dense_gated_active_fraction']:.1%}; spiking x active {sp['spiking_x_active_fraction']:.1%}"
              f"{_pci(sp, 'spiking')}, "
              f"y active {sp['spiking_y_active_fraction']:.1%}. The BDH paper reports ~{sp['paper_reference']:.0%} "
              "active neurons for its trained models.\n",
              "Cortical reference points (sources checked):\n"]
    lines += [f"- {ref['source']}: {ref['claim']}." for ref in e3["cortex_references"]]
    ra = e3.get("raster", {})
    lines += [f"\nRaster: exact per-step spike counts (colour and size: 1..K spikes in the step) recomputed from the "
              f"recorded currents with the executor's neuron update (max count difference against the run: "
              f"{e3.get('raster_count_check_max_diff', 'n/a')}); {len(ra.get('neurons', []))} x neurons, "
              f"{ra.get('sampling')}; step s of character i drawn at i x {ra.get('token_ms', 0):g} ms + s x "
              f"{ra.get('step_ms', 0):g} ms (the T steps fill the start of each character, the rest is silent). "
              f"Active (neuron, character) in the sample: {ra.get('sample_active_fraction', float('nan')):.1%}, "
              f"in all x neurons on the same characters: {ra.get('population_active_fraction', float('nan')):.1%}.\n",
              "![rates](rates_hist.png)\n\n![raster](raster.png)\n"]
    if "biophysical_raster.png" in res.get("figures", []):
        lines.append("brian2 biophysical network on its window: spike raster of the first neurons of head 0 in every "
                     "layer, and fixed-frame plastic weights of a few synapses of every layer, token by token:\n")
        lines.append("\n\n".join(f"![biophysical {n}](biophysical_{n}.png)" for n in ("raster", "weights")
                                 if f"biophysical_{n}.png" in res["figures"]) + "\n")
    return lines


def _number(v: dict) -> str:
    num = v["number"]
    text = _f(num, 4) if isinstance(num, float) else str(num)
    return text + (f" [95% CI {_f(v['ci95'][0], 4)}, {_f(v['ci95'][1], 4)}]" if v.get("ci95") else "")


def _verdicts_section(res: dict) -> list[str]:
    vs = res.get("verdicts")
    if not vs:
        return []
    lines = ["## Verdicts on the paper's claims\n",
             "One line per claim of the BDH paper (docs/study.md states them and the criteria); every number is "
             "this run's.\n", "| claim | verdict | measure | number | criterion | note |", "|---|---|---|---|---|---|"]
    for key, v in vs.items():
        lines.append(f"| ({key}) {v['claim']} | **{v['verdict']}** | {v['measure']} | {_number(v)} | {v['criterion']} | "
                     f"{v['note'] or '-'} |")
    return lines + [""]


def render_report(res: dict) -> str:
    """report.md from results.json's content alone."""
    return "\n".join(_header(res) + _verdicts_section(res) + _selectivity_section(res) + _memory_section(res)
                     + _rates_section(res)) + "\n"


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def write_results(out: Path, results: dict) -> None:
    """results.json and report.md (rendered from the same results) into out."""
    from ..fileio import atomic_write_text, json_text

    atomic_write_text(out / "results.json", json_text(_jsonable(results)))
    atomic_write_text(out / "report.md", render_report(results))
