"""The brian2 biophysical network on one short window, next to the reference executor (mode
discrete) and the dense model on the same bytes: firing rates (experiment 3), chosen points of
the memory sweep (experiment 2) and passage-scale selectivity of the plastic synapses (experiment 1)."""

from __future__ import annotations

import time

import numpy as np
import torch

from .activity import residual_inputs
from .memory import token_losses
from .rates import public, rates_summary
from .selectivity import increment_scores, synapse_of
from .settings import Log, StudySettings

NETWORK_PAIRS = (("dense", "reference"), ("dense", "biophysical"), ("reference", "biophysical"))


def biophysical_status() -> tuple[bool, str]:
    """Does the brian2 backend offer mode 'biophysical'? Checked at run time (backend present and
    simulator importable, mode in its contract), without running it."""
    from ..backends import available, contract

    if not available("brian2"):
        return False, "brian2 backend unavailable (simulator not installed)"
    if "biophysical" not in contract("brian2").modes:
        return False, "the brian2 backend does not offer mode 'biophysical' in this version"
    return True, "brian2 mode 'biophysical' available"


def passage_window(labels: np.ndarray, seq_len: int, n: int) -> tuple[int, int]:
    """(passage, offset) of the n-byte window inside one passage whose concept-labelled bytes come
    closest to half of it (earliest on ties): the biophysical runs are short, and a concept's
    selectivity needs bytes with and without it."""
    hit = labels.any(1).reshape(-1, seq_len).astype(np.int64)
    csum = np.concatenate([np.zeros((hit.shape[0], 1), dtype=np.int64), np.cumsum(hit, 1)], 1)
    sums = csum[:, n:] - csum[:, :-n]  # passages x (seq_len - n + 1)
    balance = np.minimum(sums, n - sums)
    passage, off = np.unravel_index(int(np.argmax(balance)), balance.shape)
    return int(passage), int(off)


def _run_conditions(net, wids, conds: dict, settings: StudySettings, out: dict, log: Log) -> dict:
    """Each condition in both networks: name -> {'biophysical': result, 'reference': result}."""
    from ..backends import simulate

    common = dict(timesteps=settings.timesteps, coding="multispike", max_spikes=settings.max_spikes)
    runs = {}
    for name, plast in conds.items():
        rec = ("counts", "decoded") if name == "intact" else ()
        monitors = ("spikes", "weights") if name == "intact" else ()  # the raster and weight figures
        t0 = time.perf_counter()
        bio = simulate(net, wids, backend="brian2", mode="biophysical", record=rec + monitors, plasticity=plast,
                       progress=True, token_ms=settings.token_ms, monitor_neurons=min(32, net.dims.N), **common)
        out["wall_s"][name] = time.perf_counter() - t0
        log(f"biophysical run '{name}': {wids.shape[1]} bytes in {out['wall_s'][name]:.0f} s")
        ref = simulate(net, wids, backend="reference", record=rec, plasticity=plast, **common)
        runs[name] = {"biophysical": bio, "reference": ref}
    return runs


def _window_rates(intact: dict, token_ms: float, out: dict) -> None:
    """Experiment 3: rates of the same bytes in both networks."""
    counts = {src: {pop: r.records[f"{pop}_counts"][0].float().numpy() for pop in ("x", "y")}
              for src, r in intact.items()}
    out["_per_neuron_hz"] = {}
    for pop in ("x", "y"):
        summary = rates_summary(counts["biophysical"][pop], token_ms)
        out["_per_neuron_hz"][pop] = summary["_per_neuron"]
        out[pop] = public(summary)
        out[f"{pop}_discrete_same_tokens"] = public(rates_summary(counts["reference"][pop], token_ms))


def _window_memory(model, wids, runs: dict) -> dict:
    """Experiment 2: chosen points of the sweep, loss over the window's targets."""
    with torch.no_grad():
        dense_loss = float(np.nanmean(token_losses(model(wids)[0], wids)))
    memory = {}
    for name in runs:
        memory[name] = {src: float(np.nanmean(token_losses(r.logits, wids))) for src, r in runs[name].items()}
    for name, row in memory.items():
        for src in ("biophysical", "reference"):
            row[f"{src}_minus_intact"] = row[src] - memory["intact"][src]
    return {"loss_all": memory, "dense_intact": dense_loss}


def _concept_selectivity(scores: dict, y: np.ndarray, shape: tuple, top_k: int) -> dict:
    # only synapses that respond more on the concept; fewer than top_k of them: overlap undefined
    ranked = {k: [i for i in np.argsort(-v, kind="stable")[:top_k].tolist() if v[i] > 0] for k, v in scores.items()}
    tops = {k: set(v) for k, v in ranked.items()}
    return {
        "concept_bytes": int(y.sum()),
        "top": {k: [synapse_of(i, shape) for i in v] for k, v in ranked.items()},
        "top_k_overlap": {f"{a}~{b}": (len(tops[a] & tops[b]) / top_k
                                       if min(len(tops[a]), len(tops[b])) == top_k else float("nan"))
                          for a, b in NETWORK_PAIRS},
        "score_correlation": {f"{a}~{b}": float(np.corrcoef(scores[a], scores[b])[0, 1]) for a, b in NETWORK_PAIRS},
    }


def _window_selectivity(model, wids, lab, concepts, w, intact: dict, top_k: int) -> dict:
    """Experiment 1: passage-scale selectivity, same statistic on the same bytes for each network."""
    from ..report import dense_reference

    with torch.no_grad():
        d = dense_reference(model, wids, chunk=wids.shape[1])
    spiking = {k: intact[k] for k in ("reference", "biophysical")}
    a_of = {"dense": d.a[0].float().numpy(), **{k: r.records["a_hat"][0].float().numpy() for k, r in spiking.items()}}
    g_of = {"dense": d.g, **{k: r.records["g_hat"] for k, r in spiking.items()}}
    xres_of = {k: residual_inputs(wids, g, w)[0].float().numpy() for k, g in g_of.items()}
    n_layers, n_heads, n_neurons = a_of["dense"].shape[1:]
    shape = (n_layers, n_heads, xres_of["dense"].shape[-1], n_neurons // 2)
    sel = {}
    for ci, c in enumerate(concepts):
        y = lab[:, ci].astype(bool)
        if not y.any() or y.all():
            continue
        scores = {k: increment_scores(a_of[k], xres_of[k], y) for k in a_of}
        sel[c] = _concept_selectivity(scores, y, shape, top_k)
    return sel


def biophysical_runs(model, net, ids, labels, concepts, w, settings: StudySettings, seq_len: int, log: Log) -> dict:
    """The three conditions (intact, frozen from the start, decay with the first tau) on the window
    closest to half concept bytes, and what each experiment reads from them."""
    n = min(settings.bio_tokens, seq_len)
    passage, off = passage_window(labels, seq_len, n)
    wids = ids[passage:passage + 1, off:off + n]
    lab = labels[passage * seq_len + off: passage * seq_len + off + n]
    tau = float(settings.taus_ms[0])
    conds = {"intact": None, "frozen_from_start": {"freeze_after": 0},
             f"decay_tau_{tau:g}ms": {"decay_tau_tokens": tau / settings.token_ms}}
    out = {"tokens": n, "window": {"passage": passage, "offset": off,
                                   "text": bytes(wids[0].tolist()).decode("latin-1")},
           "token_ms": settings.token_ms, "conditions": conds, "wall_s": {}}
    runs = _run_conditions(net, wids, conds, settings, out, log)
    intact = runs["intact"]
    out["settings"] = {k: v for k, v in intact["biophysical"].settings.items() if k != "biophysical"}
    out["params"] = intact["biophysical"].settings.get("biophysical")
    out["_result"] = intact["biophysical"]  # for the figures; not written to results.json
    _window_rates(intact, settings.token_ms, out)
    out["memory"] = _window_memory(model, wids, runs)
    out["selectivity"] = _window_selectivity(model, wids, lab, concepts, w, intact, settings.top_k)
    return out


def experiment_parts(bio: dict | None, not_run: dict | None) -> dict:
    """What each experiment's results section holds of the window: its keys, or the error, or why
    it did not run. Returns experiment name -> section."""
    keys = {"experiment1": ("tokens", "window", "selectivity"),
            "experiment2": ("tokens", "window", "token_ms", "conditions", "memory", "wall_s"),
            "experiment3": ("tokens", "window", "wall_s", "settings", "params", "x", "y", "x_discrete_same_tokens",
                            "y_discrete_same_tokens")}
    return {exp: not_run or ({"error": bio["error"]} if "error" in bio else {k: bio[k] for k in wanted})
            for exp, wanted in keys.items()}
