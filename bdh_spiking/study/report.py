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
            + ["\n![selective synapses](selectivity_counts.png)\n", "![weight trajectories](trajectories.png)\n"])


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


def _memory_section(res: dict) -> list[str]:
    e2 = res["experiment2"]
    lines = ["## 2. Is the memory in the synapses?\n",
             f"{e2['passages']} passages; units: {e2['units']['first']} first occurrences and {e2['units']['repeat']} "
             f"repeats of words of >= {MIN_WORD_LEN} letters recurring (byte-identical) within a passage; the targets "
             "are a unit's letters after its first. raw benefit = loss(first) - loss(repeat); context benefit = raw "
             "benefit minus that of the network frozen from the start (no synaptic memory at all), so it is 0 for "
             "that condition by definition. 95% intervals: bootstrap over units (500 resamples). Executor: "
             f"{e2['executor']}.\n",
             "| condition | loss all | loss first | loss repeat | raw benefit [95% CI] | context benefit [95% CI] |",
             "|---|---|---|---|---|---|"]
    for cname, r in list(e2["table"].items()) + [("dense (intact, float64)", e2["dense_intact"])]:
        lines.append(
            f"| {cname} | {_f(r['loss_all'])} | {_f(r['loss_first'])} | {_f(r['loss_repeat'])} | "
            f"{_f(r['raw_benefit'])} [{_f(r['raw_benefit_ci95'][0])}, {_f(r['raw_benefit_ci95'][1])}] | "
            f"{_f(r['context_benefit'])} [{_f(r['context_benefit_ci95'][0])}, {_f(r['context_benefit_ci95'][1])}] |")
    lines += ["\nDecay sweep (tau_tokens = tau_ms / token_ms):\n",
              "| characters/s | token ms | tau ms | tau tokens | context benefit |", "|---|---|---|---|---|"]
    for r in e2["decay"]:
        lines.append(f"| {r['chars_per_s']:g} | {r['token_ms']:g} | {r['tau_ms']:g} | {r['tau_tokens']:g} | "
                     f"{_f(r['context_benefit'])} |")
    lines.append("\n![benefit vs tau](memory_vs_tau.png) ![benefit vs token time](memory_vs_token_time.png)\n")
    return lines + _memory_biophysical(e2)


def _rates_tables(e3: dict) -> list[str]:
    r = e3["rates"]
    lines = [f"Source: {r['source']} run. Conversion: {r['conversion']} with token_ms = {r['token_ms']:g} "
             f"(at most {r['max_possible_hz']:g} Hz: T*K spikes per token).\n",
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


def _rates_section(res: dict) -> list[str]:
    e3 = res["experiment3"]
    sp = e3["sparsity"]
    lines = ["## 3. Is the activity biological?\n"] + _rates_tables(e3)
    lines += [f"\nDense activation sparsity: x neurons > 0 in {sp['dense_x_active_fraction']:.1%} of (neuron, token) "
              f"(per layer {', '.join(f'{v:.1%}' for v in sp['dense_x_active_fraction_per_layer'])}); gated values > 0: "
              f"{sp['dense_gated_active_fraction']:.1%}; spiking x active {sp['spiking_x_active_fraction']:.1%}, "
              f"y active {sp['spiking_y_active_fraction']:.1%}. The BDH paper reports ~{sp['paper_reference']:.0%} "
              "active neurons for its trained models.\n",
              "Cortical reference points (sources checked):\n"]
    lines += [f"- {ref['source']}: {ref['claim']}." for ref in e3["cortex_references"]]
    lines += [f"\nRaster: exact per-step spikes recomputed from the recorded currents (max count difference against "
              f"the run: {e3.get('raster_count_check_max_diff', 'n/a')}).\n",
              "![rates](rates_hist.png)\n\n![raster](raster.png)\n"]
    if "biophysical_raster.png" in res.get("figures", []):
        lines.append("brian2 biophysical network on its window: spike raster of the first neurons of head 0 in every "
                     "layer, and fixed-frame plastic weights of a few synapses of every layer, token by token:\n")
        lines.append("\n\n".join(f"![biophysical {n}](biophysical_{n}.png)" for n in ("raster", "weights")
                                 if f"biophysical_{n}.png" in res["figures"]) + "\n")
    return lines


def render_report(res: dict) -> str:
    """report.md from results.json's content alone."""
    return "\n".join(_header(res) + _selectivity_section(res) + _memory_section(res) + _rates_section(res)) + "\n"


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
