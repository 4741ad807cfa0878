"""Perturbations of the recall study's plastic synapses: decay under synaptic noise, and a lesion
of the synapses that carry one pair against activity-matched random synapses.

Both run on the reference executor's stepwise form (the plasticity switches ``noise`` and
``lesion``, semantics/plasticity.py) on the first ``probe_episodes`` episodes of each cell.

Noise: after every token's write, every synapse of a head gets N(0, (sigma rms(x) rms(q))^2),
sigma relative to the root mean square of that token's own increment x ⊗ q (seeded per seed,
cell and sigma). Each level is swept over the decay taus and without decay.

Lesion, per episode: one pair j (drawn uniformly, seeded); its query's answer is read at the
query key position t. The contribution of synapse (layer, head, d, n) to that read from the pair's
own study writes (key and value tokens s) is sum_s x_s[d] q_s[n] q_t[n] (intact run, the decoded
activities); the top-10 by absolute contribution over all layers and heads are lesioned. The
control: for each top synapse one random synapse of the same layer and head, drawn among the 50
whose activity (sum over the episode's tokens of |x_s[d] q_s[n]|) is nearest in rank, excluding
the pair's top-100. Outcome: the log-probability and correctness of the pair's answer.
"""

from __future__ import annotations

import math

import numpy as np
import torch

TOP = 10
EXCLUDE_TOP = 100
MATCH_POOL = 50


def _run(net, ids, settings, plasticity=None, record=()):
    from ..backends import simulate

    return simulate(net, ids, timesteps=settings.timesteps, coding="multispike", max_spikes=settings.max_spikes,
                    plasticity=plasticity, record=record)


def answer_logp(logits: torch.Tensor, ids: torch.Tensor, answers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log-probability (n, K) of the right answer, correct (n, K)) at the answer bytes."""
    pos = torch.as_tensor(answers - 1)
    lp = torch.log_softmax(logits[:, pos].double(), -1)
    target = ids[:, pos + 1]
    return lp.gather(-1, target[..., None]).squeeze(-1).numpy(), (lp.argmax(-1) == target).numpy()


def noise_cell(net, batch, settings, seed: int) -> dict:
    """sigma -> tau (or 'none') -> correct (m, K) on the cell's first probe_episodes episodes."""
    ids = torch.from_numpy(batch.ids[: settings.probe_episodes].astype(np.int64))
    out = {}
    for li, sigma in enumerate(s for s in settings.noise_levels if s > 0):
        base = {"noise": float(sigma), "noise_seed": int(1_000_003 * seed + 1009 * batch.K + 31 * batch.G + li)}
        runs = {"none": base, **{float(t): {**base, "decay_tau_tokens": float(t)} for t in settings.noise_taus}}
        out[float(sigma)] = {k: answer_logp(_run(net, ids, settings, p).logits, ids, batch.answers)[1]
                             for k, p in runs.items()}
    return out


def _readout_parts(net, ids: torch.Tensor, decoded: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual inputs x (B,T,L,D) and payloads q (B,T,L,H,N) of a run, from its decoded records."""
    from ..semantics import fold_weights, oscillator_cos_sin, oscillator_payload
    from .activity import residual_inputs

    w = fold_weights(net, torch.device("cpu"), torch.float64)
    x = residual_inputs(ids, decoded["g_hat"], w)
    cos, sin = oscillator_cos_sin(w["freqs"], torch.arange(ids.shape[1]))
    q = oscillator_payload(decoded["a_hat"], cos[None, :, None, None, :], sin[None, :, None, None, :])
    return x, q


def choose_synapses(x: torch.Tensor, q: torch.Tensor, study: list, t: int, rng) -> tuple[list, list, dict]:
    """One episode: (top synapses, matched random synapses, activity of both) as (layer, head, d, n)."""
    xs, qs = x[study], q[study]  # (2,L,D), (2,L,H,N)
    contrib = torch.einsum("sld,slhn,lhn->lhdn", xs, qs, q[t]).abs()
    flat = contrib.reshape(-1)
    order = torch.argsort(flat, descending=True, stable=True)
    shape = contrib.shape
    top = [np.unravel_index(int(i), shape) for i in order[:TOP]]
    excluded = {int(i) for i in order[:EXCLUDE_TOP]}
    activity = torch.einsum("sld,slhn->lhdn", x.abs(), q.abs())  # whole episode
    chosen, used = [], set()
    for lay, head, d, n in top:
        act = activity[lay, head].reshape(-1)
        rank = torch.argsort(act, stable=True)
        where = int((rank == d * shape[3] + n).nonzero()[0, 0])
        lo, hi = max(0, where - MATCH_POOL), min(len(rank), where + MATCH_POOL + 1)
        base = lay * shape[1] * shape[2] * shape[3] + head * shape[2] * shape[3]
        pool = [int(r) for r in rank[lo:hi] if base + int(r) not in excluded and base + int(r) not in used]
        pool = sorted(pool, key=lambda r: abs(float(act[r]) - float(act[d * shape[3] + n])))[:MATCH_POOL]
        pick = pool[int(rng.integers(len(pool)))]
        used.add(base + pick)
        chosen.append((lay, head, pick // shape[3], pick % shape[3]))
    acts = {"top": [float(activity[s]) for s in top], "random": [float(activity[s]) for s in chosen]}
    return [tuple(int(i) for i in s) for s in top], chosen, acts


def lesion_cell(net, batch, settings, seed: int) -> dict:
    """Per episode of the cell's first probe_episodes: the pair, its answer's log-probability and
    correctness intact / top-10 lesioned / matched random lesioned, and the chosen synapses' activity."""
    rng = np.random.default_rng([seed, batch.K, batch.G, 7])
    m = min(settings.probe_episodes, batch.ids.shape[0])
    ids = torch.from_numpy(batch.ids[:m].astype(np.int64))
    intact = _run(net, ids, settings, record=("decoded",))
    x, q = _readout_parts(net, ids, intact.records)
    pairs = rng.integers(0, batch.K, m)
    q0 = batch.query_start
    top, rand, act = [], [], {"top": [], "random": []}
    for i, j in enumerate(pairs):
        key = int(batch.ids[i, batch.answers[j] - 1])
        k_index = int(np.nonzero(batch.ids[i, : 2 * batch.K: 2] == key)[0][0])
        study = [2 * k_index, 2 * k_index + 1]
        t = int(batch.answers[j] - 1)
        assert t >= q0
        ts, rs, a = choose_synapses(x[i], q[i], study, t, rng)
        top += [(i, *s) for s in ts]
        rand += [(i, *s) for s in rs]
        act["top"].append(float(np.mean(a["top"])))
        act["random"].append(float(np.mean(a["random"])))
    rows = np.arange(m)
    out = {"pair": pairs, "activity_top": np.array(act["top"]), "activity_random": np.array(act["random"])}
    for name, res in (("intact", intact), ("top", _run(net, ids, settings, {"lesion": top})),
                      ("random", _run(net, ids, settings, {"lesion": rand}))):
        logp, correct = answer_logp(res.logits, ids, batch.answers)
        out[f"{name}_logp"], out[f"{name}_correct"] = logp[rows, pairs], correct[rows, pairs]
    return out


def tau50(taus: np.ndarray, acc: np.ndarray, intact: float, chance: float) -> float:
    """The decay tau (tokens) at which accuracy is halfway from chance to intact: the first tau
    (ascending) whose accuracy reaches the half level, log-linearly interpolated with the tau
    before it. Censored: the smallest tau if already there (an upper bound), inf if no tau is."""
    half = chance + 0.5 * (intact - chance)
    above = np.nonzero(np.asarray(acc) >= half)[0]
    if not len(above):
        return float("inf")
    j = int(above[0])
    if j == 0:
        return float(taus[0])
    lt0, lt1 = math.log(taus[j - 1]), math.log(taus[j])
    a0, a1 = float(acc[j - 1]), float(acc[j])
    frac = (half - a0) / (a1 - a0) if a1 != a0 else 0.0
    return float(math.exp(lt0 + frac * (lt1 - lt0)))


def tau_ci(boot) -> list:
    """95% percentile interval of bootstrapped tau50 values, nearest rank: a censored (inf) tau50
    stays inf instead of turning the interpolated bound into nan."""
    boot = np.asarray(boot, dtype=np.float64)
    return [float(np.percentile(boot, 2.5, method="nearest")), float(np.percentile(boot, 97.5, method="nearest"))]


def _ci(boot) -> list:
    boot = np.asarray(boot, dtype=np.float64)
    return [float(np.nanpercentile(boot, 2.5)), float(np.nanpercentile(boot, 97.5))]


def noise_stats(cells: list, settings, chance: float, rng) -> dict:
    """Per noise level: accuracy against decay tau (and without decay), tau50 (tokens, CI, ms at each
    rate), overall and per gap. The half level is halfway from chance to the noiseless intact accuracy
    on the same episodes, so a level whose best accuracy stays below it has no tau50 (inf)."""
    probe = [c for c in cells if c.get("noise")]
    if not probe:
        return {"not_run": "no probe cell in this run's grid"}
    taus = np.asarray(sorted(float(t) for t in settings.noise_taus))
    m = {id(c): min(settings.probe_episodes, c["batch"].ids.shape[0]) for c in probe}
    idx = {id(c): rng.integers(0, m[id(c)], (settings.n_boot, m[id(c)])) for c in probe}

    def mean(sub, get):  # (point, bootstrap) of the mean over cells of the per-episode mean
        arrs = [np.asarray(get(c)[: m[id(c)]], dtype=np.float64).mean(1) for c in sub]
        return float(np.mean([a.mean() for a in arrs])), np.mean([a[idx[id(c)]].mean(1) for a, c in zip(arrs, sub)], 0)

    def one(sub, sigma):
        intact = mean(sub, lambda c: c["conditions"]["intact"][0])
        if sigma == 0:
            accs = [mean(sub, lambda c, t=t: c["decay"][t]) for t in taus] if set(taus) <= set(
                float(t) for t in settings.taus) else None
            none = intact
        else:
            accs = [mean(sub, lambda c, t=t: c["noise"][sigma][t]) for t in taus]
            none = mean(sub, lambda c: c["noise"][sigma]["none"])
        out = {"no_decay_accuracy": none[0], "no_decay_accuracy_ci": _ci(none[1]), "intact_noiseless": intact[0]}
        if accs is None:
            return {**out, "tau50_tokens": None, "note": "noise 0: see tau50_tokens (the main decay sweep)"}
        point = tau50(taus, np.array([a[0] for a in accs]), intact[0], chance)
        boot = [tau50(taus, np.array([a[1][b] for a in accs]), intact[1][b], chance) for b in range(settings.n_boot)]
        return {**out, "tau50_tokens": point, "tau50_ci": tau_ci(boot),
                "censored": "<= smallest tau" if point == taus[0] else ("> largest tau" if np.isinf(point) else None),
                "tau50_ms": {f"{r:g}_chars_per_s": point * 1000.0 / r for r in settings.rates_cps},
                "accuracy_vs_tau": {f"{t:g}": a[0] for t, a in zip(taus, accs)},
                "accuracy_vs_tau_ci": {f"{t:g}": _ci(a[1]) for t, a in zip(taus, accs)}}

    levels = {}
    for sigma in settings.noise_levels:
        sigma = float(sigma)
        gaps = sorted({c["G"] for c in probe})
        levels[f"{sigma:g}"] = {"overall": one(probe, sigma),
                                "by_gap": {str(g): one([c for c in probe if c["G"] == g], sigma) for g in gaps}}
    return {"levels": levels, "taus": [float(t) for t in taus], "episodes_per_cell": settings.probe_episodes,
            "cells": [{"seed": c["seed"], "K": c["K"], "G": c["G"]} for c in probe],
            "definition": "after every token's write, each synapse of a head gets additive Gaussian noise of "
                          "std sigma * rms(x_t) * rms(q_t) (relative to that token's own increment), seeded"}


def lesion_stats(cells: list, n_boot: int, rng) -> dict:
    """Paired effects of lesioning the pair's top-10 synapses vs 10 activity-matched random ones, on the
    answer's log-probability and correctness; episodes resampled within cells (the pairing kept)."""
    probe = [c for c in cells if c.get("lesion")]
    if not probe:
        return {"not_run": "no probe cell in this run's grid (or lesion disabled)"}
    keys = {"drop_logp_top": lambda L: L["intact_logp"] - L["top_logp"],
            "drop_logp_random": lambda L: L["intact_logp"] - L["random_logp"],
            "top_minus_random_drop_logp": lambda L: L["random_logp"] - L["top_logp"],
            "accuracy_intact": lambda L: L["intact_correct"], "accuracy_top": lambda L: L["top_correct"],
            "accuracy_random": lambda L: L["random_correct"],
            "activity_top": lambda L: L["activity_top"], "activity_random": lambda L: L["activity_random"]}
    idx = [rng.integers(0, len(c["lesion"]["pair"]), (n_boot, len(c["lesion"]["pair"]))) for c in probe]
    out = {}
    for k, f in keys.items():
        arrs = [np.asarray(f(c["lesion"]), dtype=np.float64) for c in probe]
        out[k] = float(np.mean([a.mean() for a in arrs]))
        out[f"{k}_ci"] = _ci(np.mean([a[i].mean(1) for a, i in zip(arrs, idx)], 0))
    n = int(sum(len(c["lesion"]["pair"]) for c in probe))
    lo, hi = out["top_minus_random_drop_logp_ci"]
    size = (f"answer log-probability drop {out['drop_logp_top']:.4f} nats (top-10) vs {out['drop_logp_random']:.4f} "
            f"(matched random), accuracy {out['accuracy_top']:.3f} vs {out['accuracy_random']:.3f} "
            f"(intact {out['accuracy_intact']:.3f})")
    out["verdict"] = ("top-10 synapses matter more than matched random ones (paired CI above 0): " if lo > 0 else
                      "no evidence that the top-10 synapses matter more than matched random ones (paired CI "
                      "includes 0): " if hi >= 0 else "random synapses matter more (paired CI below 0): ") + size
    out.update({"pairs_lesioned": n, "synapses_per_lesion": TOP, "cells": [{"seed": c["seed"], "K": c["K"],
                "G": c["G"]} for c in probe], "definition": " ".join(__doc__.split("Lesion, per episode: ")[1].split())})
    return out
