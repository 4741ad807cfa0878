"""The statistics of experiment 2: losses per word paired across occurrences and conditions,
percentile bootstrap over words, and the hold time of a decaying trace against the
scrambled-context floor (docs/study.md, "2. Is the memory in the synapses?")."""

from __future__ import annotations

import math

import numpy as np

from .statistics import bootstrap_indices


def word_losses(ce: np.ndarray, words: list) -> tuple[np.ndarray, np.ndarray]:
    """Per word: (loss of its first occurrence, mean loss of its repeats); a unit's loss is the mean
    next-byte loss of its targets. words: [{"passage", "first", "repeats"}] (targets lists)."""
    first = np.array([ce[w["passage"], w["first"]].mean() for w in words], dtype=np.float64)
    rep = np.array([np.mean([ce[w["passage"], t].mean() for t in w["repeats"]]) for w in words], dtype=np.float64)
    return first, rep


def ci95(boot: np.ndarray) -> list:
    """Percentile 95% interval; an inf (a censored resample) sorts to the end and may be a bound."""
    b = np.sort(np.asarray(boot, dtype=np.float64).reshape(-1))
    b = b[~np.isnan(b)]
    if not b.size:
        return [float("nan"), float("nan")]
    lo, hi = int(math.floor(0.025 * (b.size - 1))), int(math.ceil(0.975 * (b.size - 1)))
    return [float(b[lo]), float(b[hi])]


def paired_mean(values: np.ndarray, idx: np.ndarray) -> tuple[float, list]:
    """Mean of per-word values and its 95% interval over the resampled words idx (n_boot, n_words)."""
    if values.size == 0:
        return float("nan"), [float("nan"), float("nan")]
    return float(values.mean()), ci95(values[idx].mean(1))


def unpaired_difference(first: np.ndarray, rep: np.ndarray, rng, n_boot: int) -> list:
    """95% interval of mean(first) - mean(rep) with the two groups resampled independently: what an
    analysis that ignores the pairing by word reports (kept only to show what pairing gains)."""
    if first.size == 0:
        return [float("nan"), float("nan")]
    i = bootstrap_indices(rng, first.size, n_boot)
    j = bootstrap_indices(rng, rep.size, n_boot)
    return ci95(first[i].mean(1) - rep[j].mean(1))


def condition_row(first: np.ndarray, rep: np.ndarray, base: tuple, idx: np.ndarray) -> dict:
    """One condition against the baseline, every statistic on the same resampled words (paired)."""
    d, d_base = first - rep, base[0] - base[1]
    raw, raw_ci = paired_mean(d, idx)
    ctx, ctx_ci = paired_mean(d - d_base, idx)
    gain, gain_ci = paired_mean(base[1] - rep, idx)
    return {"loss_first": float(first.mean()) if first.size else float("nan"),
            "loss_repeat": float(rep.mean()) if rep.size else float("nan"),
            "raw_benefit": raw, "raw_benefit_ci95": raw_ci, "context_benefit": ctx, "context_benefit_ci95": ctx_ci,
            "repeat_gain_vs_baseline": gain, "repeat_gain_vs_baseline_ci95": gain_ci}


def paired_analysis(ce_by_cond: dict, words: list, baseline: str, rng: np.random.Generator,
                    n_boot: int = 1000) -> tuple[dict, dict, np.ndarray]:
    """Per condition: losses of first occurrences and repeats, the within-word raw benefit
    (first - repeat, paired by word), the context benefit (raw benefit minus the baseline's for the
    same word) and the repeats' gain against the baseline, with 95% percentile intervals from one
    resample of words shared by every condition; plus the unpaired interval of the raw benefit.
    Returns (the table, per condition the per-word (first, repeat) losses, the resample)."""
    idx = bootstrap_indices(rng, len(words), n_boot)
    per = {c: word_losses(ce, words) for c, ce in ce_by_cond.items()}
    out = {}
    for c, (first, rep) in per.items():
        out[c] = {"loss_all": float(np.nanmean(ce_by_cond[c])), **condition_row(first, rep, per[baseline], idx),
                  "raw_benefit_unpaired_ci95": unpaired_difference(first, rep, rng, n_boot)}
    return out, per, idx


def memory_table(ce_by_cond: dict, words: list, baseline: str, rng: np.random.Generator,
                 n_boot: int = 1000) -> dict:
    """The table of ``paired_analysis`` alone."""
    return paired_analysis(ce_by_cond, words, baseline, rng, n_boot)[0]


def passage_cluster_ci(values: np.ndarray, passages: np.ndarray, rng: np.random.Generator, n_boot: int) -> list:
    """95% interval of the mean of per-word values when whole passages are resampled (the words of one
    passage share its S): a check on the word-level interval, coarse with few passages."""
    if values.size == 0:
        return [float("nan"), float("nan")]
    ids = np.unique(passages)
    members = [np.nonzero(passages == p)[0] for p in ids]
    boot = np.empty(n_boot)
    for b in range(n_boot):
        pick = np.concatenate([members[i] for i in rng.integers(0, ids.size, ids.size)])
        boot[b] = values[pick].mean()
    return ci95(boot)


def intact_cluster_ci(per: dict, words: list, baseline: str, rng: np.random.Generator, n_boot: int = 1000) -> dict:
    """The intact raw and context benefits' intervals with passages, not words, resampled."""
    passages = np.array([w["passage"] for w in words], dtype=np.int64)
    raw = per["intact"][0] - per["intact"][1]
    base = per[baseline][0] - per[baseline][1]
    return {"raw_benefit_ci95": passage_cluster_ci(raw, passages, rng, n_boot),
            "context_benefit_ci95": passage_cluster_ci(raw - base, passages, rng, n_boot),
            "passages_with_words": int(np.unique(passages).size)}


def tau_half(taus: np.ndarray, benefit: np.ndarray, intact: float) -> float:
    """The decay time constant (tokens) at which the context benefit reaches half the intact one:
    the first tau (ascending) at or above that level, log-linearly interpolated with the tau before.
    Censored: the smallest tau when it is already there (an upper bound), inf when none is."""
    half = 0.5 * intact
    above = np.nonzero(np.asarray(benefit) >= half)[0]
    if not len(above):
        return float("inf")
    j = int(above[0])
    if j == 0:
        return float(taus[0])
    b0, b1 = float(benefit[j - 1]), float(benefit[j])
    frac = (half - b0) / (b1 - b0) if b1 != b0 else 0.0
    return float(math.exp(math.log(taus[j - 1]) + frac * (math.log(taus[j]) - math.log(taus[j - 1]))))


def hold_time(per: dict, decay_conds: dict, baseline: str, idx: np.ndarray) -> dict:
    """Hold time of the decaying trace against the scrambled-context floor, per resample of words.

    decay_conds: condition name -> tau_tokens. The floor is the baseline (context benefit 0 by
    construction, its noise is the resampling spread). detectable_from_tau_tokens: the smallest
    tau whose context-benefit interval lies above the floor; tau_half_tokens: where the benefit
    reaches half the intact one (with its interval). Both are undefined (None) when the intact
    benefit itself is not above the floor."""
    base = per[baseline][0] - per[baseline][1]

    def ctx(name):
        return per[name][0] - per[name][1] - base

    names = sorted(decay_conds, key=decay_conds.get)
    taus = np.array([decay_conds[n] for n in names], dtype=np.float64)
    intact, intact_ci = paired_mean(ctx("intact"), idx)
    out = {"floor": baseline, "intact_context_benefit": intact, "intact_context_benefit_ci95": intact_ci,
           "taus_tokens": taus.tolist(), "intact_above_floor": bool(intact_ci[0] > 0)}
    if not names or not intact_ci[0] > 0:
        return {**out, "detectable_from_tau_tokens": None, "tau_half_tokens": None, "tau_half_tokens_ci95": None,
                "why_none": "no decay condition" if not names else
                "the intact context benefit is not above the scrambled-context floor (its 95% interval includes 0)"}
    rows = [paired_mean(ctx(n), idx) for n in names]
    detect = [float(t) for t, (_, ci) in zip(taus, rows) if ci[0] > 0]
    point = tau_half(taus, np.array([r[0] for r in rows]), intact)
    vals = np.stack([ctx(n) for n in names])  # n_taus, n_words
    boot_ben = vals[:, idx].mean(2)  # n_taus, n_boot
    boot_int = ctx("intact")[idx].mean(1)
    boots = np.array([tau_half(taus, boot_ben[:, b], boot_int[b]) for b in range(idx.shape[0])])
    return {**out, "detectable_from_tau_tokens": detect[0] if detect else None, "tau_half_tokens": point,
            "tau_half_tokens_ci95": ci95(boots), "tau_half_censored": ("upper bound (smallest tau)" if point == taus[0]
                                                                     else "not reached" if math.isinf(point) else None)}
