"""The statistics of the study (tests/test_study.py checks them on planted data): the byte-controlled
null of experiment 1 (midranks within byte strata, permutations of the labels within strata, the
maxT family-wise correction), bootstrap resampling, and the earlier circular-shift null pooled per
activity stratum with Benjamini-Hochberg (kept to show, in the tests, what it wrongly calls selective)."""

from __future__ import annotations

import dataclasses

import numpy as np


def shift_offsets(n_tokens: int, n_shifts: int, min_gap: int, rng: np.random.Generator) -> list[int]:
    """Circular shifts of the label sequence for the null, at least min_gap tokens from 0 both ways."""
    lo, hi = min_gap, n_tokens - min_gap
    if hi <= lo:
        lo, hi = max(1, n_tokens // 4), max(2, n_tokens - n_tokens // 4)
    return [int(v) for v in rng.choice(np.arange(lo, hi), size=n_shifts, replace=hi - lo < n_shifts)]


def label_columns(labels: np.ndarray, offsets: list[int]) -> np.ndarray:
    """(n_tokens, C, 1 + S): the observed labels, then each circular shift."""
    cols = [labels] + [np.roll(labels, off, axis=0) for off in offsets]
    return np.stack(cols, axis=2)


def auroc_sparse(vals: np.ndarray, active: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """Exact Mann-Whitney AUROC of each row's per-token values against each label column.

    vals: (n_rows, n) strictly positive values at the n tokens listed in ``active``; every other
    token has value 0 (an exact tie, given the midrank). lab: (n_tokens, M) bool. Returns (n_rows, M).
    Ties among positive values are broken by order (they are measure-zero for continuous values).
    """
    n_tokens = lab.shape[0]
    n_rows, n = vals.shape
    zeros = n_tokens - n
    n1 = lab.sum(0).astype(np.float64)
    n0 = n_tokens - n1
    ranks = np.empty((n_rows, n), dtype=np.float32)
    if n:
        order = np.argsort(vals, axis=1, kind="quicksort")
        np.put_along_axis(ranks, order, np.arange(zeros + 1, zeros + n + 1, dtype=np.float32)[None].repeat(n_rows, 0),
                          axis=1)
    pos_active = lab[active].astype(np.float32)  # n, M
    rank_sum = ranks.astype(np.float64) @ pos_active.astype(np.float64) if n else np.zeros((n_rows, lab.shape[1]))
    rank_sum = rank_sum + (n1 - pos_active.sum(0))[None] * (zeros + 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rank_sum - n1 * (n1 + 1) / 2.0) / (n1 * n0)


def auroc_dense(values: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """AUROC of nonnegative values (n_rows, n_tokens) against labels (n_tokens, M); zeros tie
    (midrank), other ties are broken by order. The vectorised twin of ``auroc_sparse`` (same numbers)."""
    n_rows, n_tokens = values.shape
    zeros = (values <= 0).sum(1).astype(np.float64)  # n_rows
    keyed = np.where(values > 0, values, -1.0).astype(np.float32)
    order = np.argsort(keyed, axis=1, kind="quicksort")
    ranks = np.empty((n_rows, n_tokens), dtype=np.float32)
    np.put_along_axis(ranks, order, np.arange(1, n_tokens + 1, dtype=np.float32)[None].repeat(n_rows, 0), axis=1)
    ranks[values <= 0] = 0.0
    labf = lab.astype(np.float32)
    n1 = lab.sum(0).astype(np.float64)
    n0 = n_tokens - n1
    zero_pos = (values <= 0).astype(np.float32) @ labf  # n_rows, M: positives with value 0
    rank_sum = (ranks @ labf).astype(np.float64) + zero_pos * ((zeros + 1) / 2.0)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rank_sum - n1 * (n1 + 1) / 2.0) / (n1 * n0)


def auroc_binary(count_pos: np.ndarray, count_all: np.ndarray, n1: float, n_tokens: int) -> np.ndarray:
    """AUROC of a 0/1 feature: 0.5 + (P(f=1 | pos) - P(f=1 | neg)) / 2."""
    n0 = n_tokens - n1
    return 0.5 + 0.5 * (count_pos / n1 - (count_all - count_pos) / n0)


def _stratum_rows(strata: np.ndarray) -> dict:
    """Stratum -> the rows in it (in order)."""
    order = np.argsort(strata, kind="stable")
    keys = np.unique(strata)
    bounds = np.searchsorted(strata[order], keys)
    return {k: order[lo:hi] for k, lo, hi in zip(keys, bounds, list(bounds[1:]) + [strata.size])}


def null_reference(null: np.ndarray, strata: np.ndarray, rng: np.random.Generator | None = None,
                   cap: int = 2_000_000) -> dict:
    """Sorted pooled null AUROCs per stratum (at most ``cap`` values each, a seeded random subset)."""
    refs = {}
    for stratum, rows in _stratum_rows(strata).items():
        if rng is not None and rows.size * null.shape[1] > cap:  # a seeded subsample of candidates
            pick = np.sort(rng.integers(0, rows.size, size=max(1, cap // null.shape[1])))
            ref = null[rows[pick]].reshape(-1)
        else:
            ref = null[rows].reshape(-1)
        ref = ref[np.isfinite(ref)]
        refs[stratum] = np.sort(ref)
    return refs


def pooled_null_pvalues(obs: np.ndarray, null: np.ndarray | None, strata: np.ndarray, refs: dict | None = None) -> np.ndarray:
    """One-sided p-values (AUROC larger than chance) against the shuffled-label null pooled over
    all candidates of the same stratum: p = (1 + #null >= obs) / (1 + #null)."""
    refs = refs if refs is not None else null_reference(null, strata)
    p = np.ones(obs.shape, dtype=np.float64)
    where = _stratum_rows(strata)
    for stratum, ref in refs.items():
        idx = where.get(stratum)
        if ref.size == 0 or idx is None:
            continue
        queries = obs[idx]
        query_order = np.argsort(queries, kind="stable")  # sorted queries: a cache-friendly search
        ge = np.empty(queries.size)
        ge[query_order] = ref.size - np.searchsorted(ref, queries[query_order], side="left")
        p[idx] = (1.0 + ge) / (1.0 + ref.size)
    p[~np.isfinite(obs)] = 1.0
    return p


def benjamini_hochberg(p: np.ndarray, q: float) -> np.ndarray:
    """Boolean mask of discoveries at FDR level q (step-up procedure)."""
    m = p.size
    if m == 0:
        return np.zeros(0, dtype=bool)
    ps = np.sort(p)
    below = np.nonzero(ps <= q * np.arange(1, m + 1) / m)[0]
    if below.size == 0:
        return np.zeros(m, dtype=bool)
    return p <= ps[below.max()]


def strata_of(fraction: np.ndarray, edges=(0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6,
                                             0.7, 0.8, 0.9, 1.01)) -> np.ndarray:
    return np.digitize(fraction, edges)


def select(obs: np.ndarray, null: np.ndarray, activity: np.ndarray, q: float, refs: dict | None = None,
           rng: np.random.Generator | None = None) -> dict:
    """The whole test for one concept: p-values from the stratified pooled null, BH at q.

    obs (n_rows,), null (n_rows, S), activity (n_rows,) fraction of tokens with a nonzero increment."""
    strata = strata_of(activity)
    refs = refs if refs is not None else null_reference(null, strata, rng)
    p = pooled_null_pvalues(obs, None, strata, refs)
    return {"p": p, "selective": benjamini_hochberg(p, q) & (obs > 0.5), "refs": refs}


def bootstrap_indices(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """(n_boot, n) indices resampling n units with replacement (an empty draw when n = 0)."""
    return rng.integers(0, max(n, 1), size=(n_boot, n))


# -- the byte-controlled null (experiment 1): within-stratum ranks, stratified permutations, maxT --------


def byte_strata(ids: np.ndarray, seq_len: int, kind: str = "byte") -> np.ndarray:
    """Stratum of each token: its byte ('byte') or (previous byte, byte) ('bigram'; the first byte of a
    passage has no previous byte: code 256). ids: (n_tokens,) byte values, passages of seq_len."""
    ids = np.asarray(ids, dtype=np.int64)
    if kind == "byte":
        return ids.copy()
    if kind != "bigram":
        raise ValueError(f"unknown stratification {kind!r}")
    prev = np.roll(ids, 1)
    prev[np.arange(ids.size) % seq_len == 0] = 256
    return prev * 257 + ids


def dense_codes(strata: np.ndarray) -> np.ndarray:
    """Strata relabelled 0..n_strata-1."""
    return np.unique(strata, return_inverse=True)[1].reshape(-1)


def tie_rounded(values: np.ndarray, bits: int = 20) -> np.ndarray:
    """Values rounded to ``bits`` significant bits (relative 1e-6): the same quantity computed twice
    (one byte's layer-0 activity in two rows of a matrix product) ties instead of being ranked by its
    last float bits."""
    mant, expo = np.frexp(np.asarray(values, dtype=np.float64))
    return np.ldexp(np.round(mant * 2.0 ** bits) / 2.0 ** bits, expo)


def centered_ranks(values: np.ndarray, strata: np.ndarray) -> np.ndarray:
    """Midranks of each row's values within each stratum of tokens, centred on the stratum's mean rank
    ((m + 1) / 2 for m tokens): values (n_rows, n_tokens) -> float32 of the same shape. Ties (such as
    every token of a stratum when a value is a function of the stratum) get the same midrank, so a
    value constant within its stratum has centred rank 0 everywhere."""
    from scipy.stats import rankdata

    values = tie_rounded(values)
    out = np.zeros(values.shape, dtype=np.float32)
    for rows in _stratum_rows(dense_codes(strata)).values():
        if rows.size < 2:
            continue
        sub = values[:, rows]
        out[:, rows] = rankdata(sub, axis=1, method="average") - (rows.size + 1) / 2.0
    return out


@dataclasses.dataclass
class StratifiedLabel:
    """One binary label prepared for the stratified permutation test: its informative tokens (strata
    holding both classes), the label there, P within-stratum permutations of it, the within-stratum
    pair count and the variance weights per stratum."""

    tokens: np.ndarray  # (n_inf,) indices of informative tokens
    observed: np.ndarray  # (n_inf,) float32 0/1
    permuted: np.ndarray  # (n_inf, P) float32 0/1
    pairs: float  # sum over strata of n1_s * n0_s
    weights: np.ndarray  # (n_strata,) n1 n0 / (n (n - 1)) per stratum code (0: uninformative)


def stratified_label(label: np.ndarray, strata: np.ndarray, n_perm: int, rng: np.random.Generator) -> StratifiedLabel:
    """Prepare ``label`` (n_tokens,) bool: permutations shuffle it among the tokens of each stratum."""
    codes = dense_codes(strata)
    n_s = np.bincount(codes).astype(np.float64)
    n1 = np.bincount(codes, weights=label.astype(np.float64), minlength=n_s.size)
    informative = (n1 > 0) & (n1 < n_s)
    tokens = np.nonzero(informative[codes])[0]
    sub_codes, sub_lab = codes[tokens], label[tokens].astype(np.float32)
    permuted = np.empty((tokens.size, n_perm), dtype=np.float32)
    base = np.argsort(sub_codes, kind="stable")
    for p in range(n_perm):
        order = np.lexsort((rng.random(tokens.size), sub_codes))  # same stratum blocks as base, shuffled inside
        permuted[base, p] = sub_lab[order]
    weights = np.where(informative & (n_s > 1), n1 * (n_s - n1) / np.maximum(n_s * (n_s - 1), 1), 0.0)
    return StratifiedLabel(tokens, sub_lab, permuted, float((n1 * (n_s - n1))[informative].sum()), weights)


def stratified_scores(ranks: np.ndarray, strata_codes: np.ndarray, lab: StratifiedLabel) -> dict:
    """The stratified rank statistic of every row against one prepared label.

    T = sum over the label's tokens of the centred within-stratum midrank (the stratified Mann-Whitney
    U minus its null mean); its exact variance under within-stratum permutation is
    sum_s n1 n0 / (n (n - 1)) * sum_{t in s} rank_t^2. Returns z (observed, standardized; 0 where the
    variance is 0), z_perm (n_rows, P), and the stratified AUROC 0.5 + T / sum_s n1 n0 (the probability
    that a labelled token's value exceeds an unlabelled one's of the same stratum, ties counting 1/2)."""
    r = ranks[:, lab.tokens]
    var = (r.astype(np.float64) ** 2) @ lab.weights[strata_codes[lab.tokens]]
    sd = np.sqrt(var)
    scale = np.where(sd > 1e-9, 1.0 / np.where(sd > 1e-9, sd, 1.0), 0.0)
    t_obs = r.astype(np.float64) @ lab.observed.astype(np.float64)
    t_perm = r @ lab.permuted
    auroc = 0.5 + t_obs / lab.pairs if lab.pairs > 0 else np.full(r.shape[0], np.nan)
    return {"z": t_obs * scale, "z_perm": t_perm * scale[:, None], "auroc": auroc, "testable": sd > 1e-9}


def maxt_adjusted(z: np.ndarray, perm_max: np.ndarray) -> np.ndarray:
    """Single-step maxT (Westfall-Young) adjusted p-values, one-sided: p = (1 + #{perm max >= z}) / (1 + P).
    perm_max: (P,) the largest standardized statistic over the whole family in each permutation."""
    ref = np.sort(perm_max)
    return (1.0 + ref.size - np.searchsorted(ref, z, side="left")) / (1.0 + ref.size)
