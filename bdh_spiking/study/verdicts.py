"""One verdict per claim of the BDH paper (Kosowski et al. 2025, arXiv 2509.26507) as docs/study.md
states them: "supported", "not supported" or "not testable here", each with the number behind it,
its 95% interval and the criterion, computed from the results of the same run."""

from __future__ import annotations

import math

SUPPORTED, NOT_SUPPORTED, NOT_TESTABLE = "supported", "not supported", "not testable here"
CLAIMS = {
    "a": "working memory during inference lives in synaptic plasticity (Hebbian synapses between spiking neurons)",
    "b": "individual synapses strengthen selectively whenever a specific concept is heard (monosemantic synapses)",
    "c": "activations are sparse and positive: about 5% of neurons active",
    "d": "this is a possible mechanism by which human neurons achieve speech",
}
SPARSE_BOUND = 2.0  # claim (c): supported when the whole interval lies at or below twice the paper's fraction


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _verdict(claim: str, verdict: str, measure: str, number, ci, criterion: str, note: str = "") -> dict:
    return {"claim": CLAIMS[claim], "verdict": verdict, "measure": measure, "number": number, "ci95": ci,
            "criterion": criterion, "note": note}


def claim_a(e2: dict) -> dict:
    """The intact network's context benefit against the scrambled-context baseline, paired by word."""
    row = e2["table"]["intact"]
    measure = (f"context benefit of intact plasticity over the {e2['baseline']} baseline on repeated words, paired by "
               "word [nats/byte]")
    criterion = "supported when the 95% interval lies above 0; not supported otherwise"
    num, ci = row["context_benefit"], row["context_benefit_ci95"]
    if not e2["units"].get("words") or not _finite(num):
        return _verdict("a", NOT_TESTABLE, measure, num, ci, criterion, "no word recurs within a passage of the sweep")
    note = ("" if e2["baseline"] != "frozen_from_start" else
            "baseline is the pathway lesion (one passage only): the number mixes memory with the pathway; ")
    rep = e2.get("first_occurrence_replaced")
    if rep:
        lo, hi = rep["repeat_gain_ci95"]
        note += (f"with the earlier occurrence replaced by random letters repeats lose {rep['repeat_gain']:.3f} "
                 f"[{lo:.3f}, {hi:.3f}] nats/byte")
    return _verdict("a", SUPPORTED if ci[0] > 0 else NOT_SUPPORTED, measure, num, ci, criterion, note)


def claim_b(results: dict) -> dict:
    """Selective synapses under a null that controls the byte, when the run has one."""
    sel = results.get("selectivity") or {}
    criterion = ("supported when a null that controls the byte finds more selective synapses than its decoys "
                 "(false-discovery estimate); a null that does not control the byte cannot separate a concept from "
                 "the letters it is spelled with")
    if _finite(sel.get("discoveries")) and _finite(sel.get("decoy_discoveries_mean")):
        n, decoy = sel["discoveries"], sel["decoy_discoveries_mean"]
        return _verdict("b", SUPPORTED if n > decoy and n >= 1 else NOT_SUPPORTED,
                        f"selective synapses summed over concepts, null: {sel.get('null')}", n, None, criterion,
                        f"decoy discoveries (mean): {decoy:g}; under the stricter null that also controls the "
                        f"previous byte: {sel.get('discoveries_bigram_null', 'not run')}")
    spk = results["experiment1"]["variants"].get("spiking", {}).get("increments", {}).get("per_concept", {})
    total = int(sum(d["selective"] for d in spk.values()))
    return _verdict("b", NOT_TESTABLE, "selective x->residual synapses summed over concepts, spiking run, "
                    "circular-shift null", total, None, criterion,
                    "this run's null does not control the byte: its counts include letter tuning")


def claim_c(e3: dict) -> dict:
    """The dense model's fraction of x neurons active per token, its interval over passages."""
    sp = e3["sparsity"]
    ref = sp["paper_reference"]
    bound = SPARSE_BOUND * ref
    num, ci = sp["dense_x_active_fraction"], sp.get("dense_x_active_fraction_ci95")
    criterion = (f"supported when the whole 95% interval lies at or below {bound:.0%} ({SPARSE_BOUND:g} x the paper's "
                 f"{ref:.0%}); not supported otherwise. Positivity holds by construction (ReLU; spike counts)")
    note = (f"spiking network: {sp['spiking_x_active_fraction']:.1%} of x neurons fire per character "
            f"[{', '.join(f'{v:.1%}' for v in sp.get('spiking_x_active_fraction_ci95') or [])}]")
    if ci is None:
        return _verdict("c", NOT_TESTABLE, "dense x active fraction", num, None, criterion, "no passage interval")
    return _verdict("c", SUPPORTED if ci[1] <= bound else NOT_SUPPORTED,
                    "fraction of (x neuron, token) with a > 0 in the dense model", num, ci, criterion, note)


def claim_d(e2: dict, e3: dict) -> dict:
    """Not a claim one model run can test; the numbers a reader would weigh."""
    r = e3["rates"]
    hold = e2.get("hold_time", {})
    tau = hold.get("tau_half_tokens")
    held = (f"hold time tau_half {tau:g} tokens = {tau * r['token_ms']:g} ms at {r['token_ms']:g} ms/character"
            if _finite(tau) else f"hold time: {hold.get('why_none') or hold.get('tau_half_censored') or 'not measured'}")
    return _verdict("d", NOT_TESTABLE, "mean x rate [Hz] at the stated token time", r["x"]["mean_hz"], None,
                    "a claim about human neurons; a converted language model can only be consistent with it or not",
                    f"rates scale as 1/token_ms and with the calibrated thresholds ({r['x']['mean_spikes_per_token']:.2f}"
                    f" x spikes per neuron per character); {r['x']['in_cortical_band_fraction']:.1%} of x neurons in "
                    f"0.1-10 Hz; {held}")


def verdicts(results: dict) -> dict:
    """Claims (a)-(d) -> their verdicts, from this run's results."""
    e2, e3 = results["experiment2"], results["experiment3"]
    return {"a": claim_a(e2), "b": claim_b(results), "c": claim_c(e3), "d": claim_d(e2, e3)}
