"""bdh-study: three experiments on the plastic working memory of the spiking BDH.

1. Synapses that carry concepts: per-token increments of (a) the neuron-to-neuron state sigma
   reconstructed from spike counts and (b) the executed x-neuron -> residual synapses, frame-free;
   AUROC against a concept's presence, a circular-shift null, Benjamini-Hochberg FDR.
2. Is the memory in the synapses? Next-byte loss on repeated words under intact, frozen, reset
   and decaying plasticity (decay time constants in ms of biological time).
3. Is the activity biological? Firing rates in Hz per population, silent fractions, dense
   activation sparsity, a spike raster.

Definitions and statistical choices: docs/study.md. Everything here is deterministic given the
seed; every number written to report.md comes from results.json of the same run.
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import math
import platform
import re
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import __version__
from .errors import ConfigError, TextError

Log = Callable[[str], None]

# Default concepts for the shipped held-out text (Taming of the Shrew, Act II): the four speaker
# names that recur both as speaker tags ("GREMIO:") and inside speech ("Gremio"), a common
# function word, and the punctuation pattern that ends every speaker tag.
DEFAULT_CONCEPTS = ["GREMIO", "BAPTISTA", "PETRUCHIO", "KATHARINA", "the", ":\\n"]
MIN_WORD_LEN = 4

# Cortical reference values (checked sources; see docs/study.md).
CORTEX_REFERENCES = [
    {"source": "Barth & Poulet 2012, Trends Neurosci 35:345-355, doi:10.1016/j.tins.2012.03.008",
     "claim": "review of unbiased recordings in sensory neocortex: a minority of neurons fire most spikes, "
              "supragranular spiking is sparse and some cells are silent"},
    {"source": "Lennie 2003, Curr Biol 13:493-497, doi:10.1016/S0960-9822(03)00135-0",
     "claim": "the energy budget of human cortex limits the neurons that can be substantially active "
              "concurrently, possibly to fewer than 1%"},
    {"source": "Vijayan et al. 2010, J Neurophysiol 103:2074-2084, doi:10.1152/jn.00474.2009",
     "claim": "awake rat barrel cortex: most regular-spiking units fire above 1 Hz, 27.4% above 10 Hz during "
              "cue interaction; under isoflurane all below 1 Hz"},
]
CORTEX_BAND_HZ = (0.1, 10.0)  # the commonly quoted range of mean cortical rates
PAPER_SPARSITY = 0.05  # BDH paper (Kosowski et al. 2025): ~5% of neurons active


@dataclasses.dataclass
class StudySettings:
    out: str
    checkpoint: str | None = None
    text: str | None = None
    concepts_file: str | None = None
    seed: int = 0
    quick: bool = False
    timesteps: int = 8
    max_spikes: int = 4
    seq_len: int = 256
    max_tokens: int = 4096  # experiments 1 and 3
    sweep_tokens: int = 4096  # experiment 2
    token_ms: float = 100.0
    dt_ms: float = 1.0
    taus_ms: tuple = (300.0, 1000.0, 3000.0)
    rates_cps: tuple = (5.0, 10.0, 20.0)
    freeze_after: tuple = (64,)
    reset_every: tuple = (32,)
    shifts: int = 19
    fdr: float = 0.05
    top_k: int = 10
    n_layer: int | None = None
    calibration_bytes: int | None = None
    layers: tuple | None = None  # experiment 1 analyses these layers (None: all)
    bio_tokens: int = 32  # brian2 biophysical runs (all three experiments) on a window of this many bytes

    def validate(self) -> "StudySettings":
        if not self.token_ms > 0 or not math.isfinite(self.token_ms):
            raise ConfigError(f"token time must be > 0 ms, got {self.token_ms}")
        if not self.dt_ms > 0:
            raise ConfigError(f"simulation step must be > 0 ms, got {self.dt_ms}")
        for tau in self.taus_ms:
            if not tau > 0 or not math.isfinite(tau):
                raise ConfigError(f"decay time constants must be > 0 ms, got {tau}")
        for rate in self.rates_cps:
            if not rate > 0:
                raise ConfigError(f"presentation rates must be > 0 characters/s, got {rate}")
        step_ms = self.timesteps * self.dt_ms
        for token_ms in [self.token_ms] + [1000.0 / r for r in self.rates_cps]:
            if token_ms < step_ms:
                raise ConfigError(f"token time {token_ms:g} ms is shorter than its T={self.timesteps} simulation "
                                  f"steps of {self.dt_ms:g} ms ({step_ms:g} ms)")
        if self.shifts < 2:
            raise ConfigError(f"the shuffled-label null needs at least 2 shifts, got {self.shifts}")
        if not 0 < self.fdr < 1:
            raise ConfigError(f"FDR level must be in (0, 1), got {self.fdr}")
        for k in self.freeze_after:
            if k < 0:
                raise ConfigError(f"freeze_after must be >= 0, got {k}")
        for m in self.reset_every:
            if m < 1:
                raise ConfigError(f"reset_every must be >= 1, got {m}")
        if self.bio_tokens < 0:
            raise ConfigError(f"--bio-tokens must be >= 0 (0 skips the biophysical runs), got {self.bio_tokens}")
        if self.bio_tokens > 0:  # a bad BDH_SPIKING_BRIAN2_TARGET fails here, not after the reference runs
            from .backends.brian2.codegen import check_target

            check_target("auto")
        return self


# ----------------------------------------------------------------------------------------
# concepts and labels
# ----------------------------------------------------------------------------------------
def parse_concepts(lines) -> list[str]:
    """One concept per line; backslash escapes (\\n, \\t) are decoded; blank lines skipped."""
    out = []
    for line in lines:
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        try:
            out.append(codecs.decode(line, "unicode_escape"))
        except UnicodeDecodeError as exc:
            raise TextError(f"bad escape in concept {line!r}: {exc.reason}") from None
    return out


def concept_pattern(concept: str) -> re.Pattern:
    """Alphabetic concepts match as whole words, case-insensitively (the tag 'GREMIO:' and the
    name 'Gremio' in speech are one concept); anything else matches literally, case-sensitively."""
    raw = concept.encode("utf-8")
    if re.fullmatch(rb"[A-Za-z]+", raw):
        return re.compile(rb"(?<![A-Za-z])" + re.escape(raw) + rb"(?![A-Za-z])", re.IGNORECASE)
    return re.compile(re.escape(raw))


def concept_occurrences(data: bytes, concept: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in concept_pattern(concept).finditer(data)]


def concept_labels(data: bytes, concepts: list[str]) -> tuple[np.ndarray, dict]:
    """(T, C) bool: token t lies inside an occurrence of concept c. Plus the occurrences."""
    labels = np.zeros((len(data), len(concepts)), dtype=bool)
    occ = {}
    for j, c in enumerate(concepts):
        occ[c] = concept_occurrences(data, c)
        for s, e in occ[c]:
            labels[s:e, j] = True
    return labels, occ


def shift_offsets(n_tokens: int, n_shifts: int, min_gap: int, rng: np.random.Generator) -> list[int]:
    """Circular shifts of the label sequence for the null, at least min_gap tokens from 0 both ways."""
    lo, hi = min_gap, n_tokens - min_gap
    if hi <= lo:
        lo, hi = max(1, n_tokens // 4), max(2, n_tokens - n_tokens // 4)
    return [int(v) for v in rng.choice(np.arange(lo, hi), size=n_shifts, replace=hi - lo < n_shifts)]


def label_columns(labels: np.ndarray, offsets: list[int]) -> np.ndarray:
    """(T, C, 1 + S): the observed labels, then each circular shift."""
    cols = [labels] + [np.roll(labels, off, axis=0) for off in offsets]
    return np.stack(cols, axis=2)


# ----------------------------------------------------------------------------------------
# AUROC, null, FDR (the pipeline tests/test_study.py checks on planted data)
# ----------------------------------------------------------------------------------------
def auroc_sparse(vals: np.ndarray, active: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """Exact Mann-Whitney AUROC of each row's per-token values against each label column.

    vals: (K, n) strictly positive values at the n tokens listed in ``active``; every other token
    has value 0 (an exact tie, given the midrank). lab: (T, M) bool. Returns (K, M).
    Ties among positive values are broken by order (they are measure-zero for continuous values).
    """
    T = lab.shape[0]
    K, n = vals.shape
    z = T - n
    n1 = lab.sum(0).astype(np.float64)
    n0 = T - n1
    ranks = np.empty((K, n), dtype=np.float32)
    if n:
        order = np.argsort(vals, axis=1, kind="quicksort")
        np.put_along_axis(ranks, order, np.arange(z + 1, z + n + 1, dtype=np.float32)[None].repeat(K, 0), axis=1)
    pos_active = lab[active].astype(np.float32)  # n, M
    rank_sum = ranks.astype(np.float64) @ pos_active.astype(np.float64) if n else np.zeros((K, lab.shape[1]))
    rank_sum = rank_sum + (n1 - pos_active.sum(0))[None] * (z + 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rank_sum - n1 * (n1 + 1) / 2.0) / (n1 * n0)


def auroc_dense(values: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """AUROC of nonnegative values (K, T) against labels (T, M); zeros tie (midrank), other ties
    are broken by order. The vectorised twin of ``auroc_sparse`` (same numbers)."""
    K, T = values.shape
    z = (values <= 0).sum(1).astype(np.float64)  # K
    keyed = np.where(values > 0, values, -1.0).astype(np.float32)
    order = np.argsort(keyed, axis=1, kind="quicksort")
    ranks = np.empty((K, T), dtype=np.float32)
    np.put_along_axis(ranks, order, np.arange(1, T + 1, dtype=np.float32)[None].repeat(K, 0), axis=1)
    ranks[values <= 0] = 0.0
    labf = lab.astype(np.float32)
    n1 = lab.sum(0).astype(np.float64)
    n0 = T - n1
    zero_pos = (values <= 0).astype(np.float32) @ labf  # K, M: positives with value 0
    rank_sum = (ranks @ labf).astype(np.float64) + zero_pos * ((z + 1) / 2.0)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rank_sum - n1 * (n1 + 1) / 2.0) / (n1 * n0)


def auroc_binary(count_pos: np.ndarray, count_all: np.ndarray, n1: float, n_tokens: int) -> np.ndarray:
    """AUROC of a 0/1 feature: 0.5 + (P(f=1 | pos) - P(f=1 | neg)) / 2."""
    n0 = n_tokens - n1
    return 0.5 + 0.5 * (count_pos / n1 - (count_all - count_pos) / n0)


def null_reference(null: np.ndarray, strata: np.ndarray, rng: np.random.Generator | None = None,
                   cap: int = 2_000_000) -> dict:
    """Sorted pooled null AUROCs per stratum (at most ``cap`` values each, a seeded random subset)."""
    refs = {}
    order = np.argsort(strata, kind="stable")
    bounds = np.searchsorted(strata[order], np.unique(strata))
    for s, lo, hi in zip(np.unique(strata), bounds, list(bounds[1:]) + [strata.size]):
        rows = order[lo:hi]
        if rng is not None and rows.size * null.shape[1] > cap:  # a seeded subsample of candidates
            pick = np.sort(rng.integers(0, rows.size, size=max(1, cap // null.shape[1])))
            ref = null[rows[pick]].reshape(-1)
        else:
            ref = null[rows].reshape(-1)
        ref = ref[np.isfinite(ref)]
        refs[s] = np.sort(ref)
    return refs


def pooled_null_pvalues(obs: np.ndarray, null: np.ndarray | None, strata: np.ndarray, refs: dict | None = None) -> np.ndarray:
    """One-sided p-values (AUROC larger than chance) against the shuffled-label null pooled over
    all candidates of the same stratum: p = (1 + #null >= obs) / (1 + #null)."""
    refs = refs if refs is not None else null_reference(null, strata)
    p = np.ones(obs.shape, dtype=np.float64)
    order = np.argsort(strata, kind="stable")
    keys = np.unique(strata)
    bounds = np.searchsorted(strata[order], keys)
    where = {k: order[lo:hi] for k, lo, hi in zip(keys, bounds, list(bounds[1:]) + [strata.size])}
    for s, ref in refs.items():
        idx = where.get(s)
        if ref.size == 0 or idx is None:
            continue
        q = obs[idx]
        qo = np.argsort(q, kind="stable")  # sorted queries: a cache-friendly search
        ge = np.empty(q.size)
        ge[qo] = ref.size - np.searchsorted(ref, q[qo], side="left")
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

    obs (K,), null (K, S), activity (K,) fraction of tokens with a nonzero increment."""
    strata = strata_of(activity)
    refs = refs if refs is not None else null_reference(null, strata, rng)
    p = pooled_null_pvalues(obs, None, strata, refs)
    return {"p": p, "selective": benjamini_hochberg(p, q) & (obs > 0.5), "refs": refs}


# ----------------------------------------------------------------------------------------
# running the model
# ----------------------------------------------------------------------------------------
def residual_inputs(ids: torch.Tensor, g: torch.Tensor, w: dict) -> torch.Tensor:
    """Each layer's residual input x^l (B,T,L,D), rebuilt from the gated values g (B,T,L,H,N):
    x^0 = LN(embed), x^{l+1} = LN(x^l + LN(g^l Dec)) (the decoder stage of every executor)."""
    from .semantics import layer_norm

    B, T, L = g.shape[:3]
    x = layer_norm(w["embed"][ids])
    xs = []
    for layer in range(L):
        xs.append(x)
        m = g[:, :, layer].reshape(B, T, -1).to(w["decoder"].dtype) @ w["decoder"]
        x = layer_norm(x + layer_norm(m))
    return torch.stack(xs, 2)


@dataclasses.dataclass
class Activity:
    """What the analyses need from one run, tokens flattened (window-major)."""

    name: str
    a: np.ndarray  # (Ttok, L, H, N) float32 decoded x activity
    g: np.ndarray  # (Ttok, L, H, N) float32 gated values
    xres: np.ndarray  # (Ttok, L, D) float32 residual input per layer
    x_counts: np.ndarray | None = None  # spiking runs only
    y_counts: np.ndarray | None = None
    logits: torch.Tensor | None = None


def dense_activity(model, net, ids, w) -> Activity:
    from .report import dense_reference

    d = dense_reference(model, ids, chunk=ids.shape[1])
    xres = residual_inputs(ids, d.g, w)
    flat = lambda t: t.reshape(-1, *t.shape[2:]).float().numpy()  # noqa: E731
    return Activity("dense", flat(d.a), flat(d.g), flat(xres), logits=d.logits)


def spiking_activity(net, ids, w, settings: StudySettings, backend="reference", mode="discrete",
                     name="spiking") -> Activity:
    from .backends import simulate

    r = simulate(net, ids, backend=backend, timesteps=settings.timesteps, coding="multispike", mode=mode,
                 max_spikes=settings.max_spikes, record=("counts", "decoded"), progress=True,
                 **({"chunk": ids.shape[1]} if backend == "reference" else {}))
    rec = r.records
    xres = residual_inputs(ids, rec["g_hat"], w)
    flat = lambda t: t.reshape(-1, *t.shape[2:]).float().numpy()  # noqa: E731
    return Activity(name, flat(rec["a_hat"]), flat(rec["g_hat"]), flat(xres), flat(rec["x_counts"]),
                    flat(rec["y_counts"]), logits=r.logits.double())


# ----------------------------------------------------------------------------------------
# experiment 1
# ----------------------------------------------------------------------------------------
def pair_norms(a: np.ndarray) -> np.ndarray:
    """|q| per oscillator pair = |a| per pair (rotation-invariant): (..., N) -> (..., N/2)."""
    return np.sqrt(a[..., 0::2] ** 2 + a[..., 1::2] ** 2)


def increment_selectivity(act: Activity, cols: np.ndarray, progress=True) -> dict:
    """(b) frame-free increments |x_t[d]| * |q_t(pair k)| of every x->residual synapse (l,h,d,k).

    Returns obs (K, C), null (K, C, S) AUROCs and the activity fraction per synapse."""
    Tt, L, H, N = act.a.shape
    D = act.xres.shape[2]
    P = N // 2
    C, M = cols.shape[1], cols.shape[1] * cols.shape[2]
    lab = cols.reshape(Tt, M)
    K = L * H * D * P
    au = np.empty((K, M), dtype=np.float32)
    activity = np.empty(K, dtype=np.float32)
    r_all = pair_norms(act.a)  # Ttok, L, H, P
    bar = tqdm(total=L * H * P, desc=f"selectivity x->residual ({act.name})", disable=not progress, leave=False)
    vectorised = Tt <= 1024  # small runs: one sort per head; large runs: only the active tokens, per pair
    for layer in range(L):
        xabs = np.abs(act.xres[:, layer])  # Ttok, D
        for h in range(H):
            r = r_all[:, layer, h]  # Ttok, P
            base = (layer * H + h) * D * P
            if vectorised:
                vals = (xabs.T[:, None, :] * r.T[None, :, :]).reshape(D * P, Tt)  # index d * P + k
                au[base: base + D * P] = auroc_dense(vals, lab)
                activity[base: base + D * P] = np.tile((r > 0).mean(0), D)
                bar.update(P)
                continue
            for k in range(P):
                active = np.nonzero(r[:, k] > 0)[0]
                vals = (xabs[active] * r[active, k][:, None]).T  # D, n
                idx = base + np.arange(D) * P + k
                au[idx] = auroc_sparse(vals, active, lab)
                activity[idx] = active.size / Tt
                bar.update(1)
    bar.close()
    au = au.reshape(K, C, cols.shape[2])
    return {"obs": au[:, :, 0], "null": au[:, :, 1:], "activity": activity, "shape": (L, H, D, P)}


def sigma_selectivity(act: Activity, cols: np.ndarray) -> dict:
    """(a) sigma_{l,h}[i,j] = sum_t a_t[i] a_t[j] over co-firing x neurons of one head (i < j).

    Per-token increment support: both neurons fire in token t. Only pairs that ever co-fire are
    candidates (and stored). Returns obs (K, C), null (K, C, S), activity, the pair ids and the
    accumulated sigma values of the stored pairs."""
    Tt, L, H, N = act.a.shape
    C, S1 = cols.shape[1], cols.shape[2]
    obs, null, activity, ids, values = [], [], [], [], []
    iu = np.triu_indices(N, k=1)
    flat_iu = torch.from_numpy(iu[0] * N + iu[1])
    n1 = cols.sum(0).astype(np.float64)  # C, S1
    pos_lists = [[torch.from_numpy(np.nonzero(cols[:, c, s])[0]) for s in range(S1)] for c in range(C)]
    for layer in range(L):
        for h in range(H):
            a = torch.from_numpy(np.ascontiguousarray(act.a[:, layer, h]))
            b = (a > 0).float()
            total_t = (b.T @ b).reshape(-1)[flat_iu]
            keep_t = torch.nonzero(total_t > 0).squeeze(1)
            flat_keep = flat_iu[keep_t]
            total = total_t[keep_t].double().numpy()
            sig = (a.T @ a).reshape(-1)[flat_keep].numpy()
            au = np.empty((keep_t.numel(), C, S1), dtype=np.float32)
            for c in range(C):
                for s in range(S1):
                    bp = b[pos_lists[c][s]]
                    cp = (bp.T @ bp).reshape(-1)[flat_keep].double().numpy()
                    au[:, c, s] = auroc_binary(cp, total, n1[c, s], Tt)
            keep = keep_t.numpy()
            obs.append(au[:, :, 0])
            null.append(au[:, :, 1:])
            activity.append(total / Tt)
            ids.append(np.stack([np.full(keep.size, layer), np.full(keep.size, h), iu[0][keep], iu[1][keep]], 1))
            values.append(sig)
    n_pairs = L * H * N * (N - 1) // 2
    return {"obs": np.concatenate(obs), "null": np.concatenate(null), "activity": np.concatenate(activity),
            "ids": np.concatenate(ids), "sigma": np.concatenate(values), "n_possible": n_pairs}


def summarize_selectivity(res: dict, concepts: list[str], q: float, top_k: int, decode_id,
                          rng: np.random.Generator | None = None) -> dict:
    """Per concept: BH selection on the observed labels and on a decoy (one null shift taken out
    of the pool and tested like a concept)."""
    out = {}
    for c, name in enumerate(concepts):
        obs, null = res["obs"][:, c].astype(np.float64), res["null"][:, c].astype(np.float64)
        sel = select(obs, null[:, 1:], res["activity"], q, rng=rng)
        decoy = select(null[:, 0], null[:, 1:], res["activity"], q, refs=sel["refs"])
        score = np.nan_to_num(obs, nan=-1.0)
        order = np.argpartition(-score, min(top_k, score.size - 1))[:top_k]
        order = order[np.argsort(-score[order], kind="stable")]
        out[name] = {
            "candidates": int(np.isfinite(obs).sum()),
            "selective": int(sel["selective"].sum()),
            "decoy_selective": int(decoy["selective"].sum()),
            "selective_above_own_null": int((sel["selective"] & (obs > np.nanmax(null[:, 1:], axis=1))).sum()),
            "max_auroc": float(np.nanmax(obs)),
            "null_auroc_p99": float(np.nanpercentile(null, 99)),
            "top": [{"synapse": decode_id(int(i)), "auroc": float(obs[i]), "p": float(sel["p"][i]),
                     "selective": bool(sel["selective"][i]), "activity": float(res["activity"][i])}
                    for i in order],
        }
    return out


def top_overlap(a: dict, b: dict, concepts: list[str]) -> dict:
    out = {}
    for c in concepts:
        sa = {tuple(t["synapse"]) for t in a[c]["top"]}
        sb = {tuple(t["synapse"]) for t in b[c]["top"]}
        out[c] = len(sa & sb) / max(1, len(sa))
    return out


def weight_trajectory(act: Activity, synapse, seq_len: int, freqs: np.ndarray) -> np.ndarray:
    """|S[l,h][d, pair k]| (the fixed-frame 2-vector) after each token; S = 0 at each passage start."""
    from .model import rope_cos_sin

    layer, h, d, k = synapse
    Tt = act.a.shape[0]
    pos = torch.arange(Tt) % seq_len
    cos, sin = rope_cos_sin(torch.as_tensor(freqs), pos)
    c, s = cos[:, 2 * k].double().numpy(), sin[:, 2 * k].double().numpy()
    a0, a1 = act.a[:, layer, h, 2 * k].astype(np.float64), act.a[:, layer, h, 2 * k + 1].astype(np.float64)
    q0, q1 = a0 * c - a1 * s, a1 * c + a0 * s
    x = act.xres[:, layer, d].astype(np.float64)
    w0, w1 = np.zeros(Tt), np.zeros(Tt)
    acc0 = acc1 = 0.0
    for t in range(Tt):
        if t % seq_len == 0:
            acc0 = acc1 = 0.0
        acc0 += x[t] * q0[t]
        acc1 += x[t] * q1[t]
        w0[t], w1[t] = acc0, acc1
    return np.hypot(w0, w1)


# ----------------------------------------------------------------------------------------
# experiment 2
# ----------------------------------------------------------------------------------------
def word_units(window: bytes, min_len: int = MIN_WORD_LEN) -> dict:
    """Occurrences of words (maximal runs of ASCII letters, >= min_len, exact bytes) in one passage.

    repeat: an occurrence whose word occurred earlier in the same passage; first: the first
    occurrence of a word that recurs later in it. A unit's target positions are its letters
    except the first (the first letter of a repeat cannot be known from context)."""
    seen, units = {}, {"first": [], "repeat": []}
    occ = [(m.start(), m.end(), m.group()) for m in re.finditer(rb"[A-Za-z]+", window) if len(m.group()) >= min_len]
    counts = {}
    for _, _, w in occ:
        counts[w] = counts.get(w, 0) + 1
    for s, e, w in occ:
        targets = list(range(s + 1, e))
        if w in seen:
            units["repeat"].append(targets)
        elif counts[w] > 1:
            units["first"].append(targets)
        seen[w] = True
    return units


def token_losses(logits: torch.Tensor, ids: torch.Tensor) -> np.ndarray:
    """ce[b, p] = loss of predicting byte p from position p-1 (ce[:, 0] = nan)."""
    lp = F.log_softmax(logits.double(), -1)
    ce = -lp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
    out = np.full(ids.shape, np.nan)
    out[:, 1:] = ce.numpy()
    return out


def unit_losses(ce: np.ndarray, units: list) -> dict:
    """Mean loss per unit, for the 'first' and 'repeat' units: (window, targets) lists."""
    return {kind: np.array([ce[b, t].mean() for b, t in units[kind]]) for kind in ("first", "repeat")}


def collect_units(ids: torch.Tensor, min_len: int = MIN_WORD_LEN) -> dict:
    units = {"first": [], "repeat": []}
    for b in range(ids.shape[0]):
        u = word_units(bytes(ids[b].tolist()), min_len)
        for kind in units:
            units[kind] += [(b, t) for t in u[kind]]
    return units


def memory_table(ce_by_cond: dict, units: dict, baseline: str, rng: np.random.Generator,
                 n_boot: int = 500) -> dict:
    """Per condition: loss on first occurrences and repeats, raw benefit (first - repeat) and the
    context benefit (raw benefit minus the baseline's raw benefit), with bootstrap 95% intervals
    over units (the same resampled units for every condition)."""
    per = {c: unit_losses(ce, units) for c, ce in ce_by_cond.items()}
    nf, nr = len(units["first"]), len(units["repeat"])
    boot_f = rng.integers(0, max(nf, 1), size=(n_boot, nf))
    boot_r = rng.integers(0, max(nr, 1), size=(n_boot, nr))
    base = per[baseline]
    out = {}
    for c, u in per.items():
        raw = float(u["first"].mean() - u["repeat"].mean()) if nf and nr else float("nan")
        braw = (u["first"][boot_f].mean(1) - u["repeat"][boot_r].mean(1)) if nf and nr else np.array([np.nan])
        bbase = (base["first"][boot_f].mean(1) - base["repeat"][boot_r].mean(1)) if nf and nr else np.array([np.nan])
        ce = ce_by_cond[c]
        ctx = raw - float(base["first"].mean() - base["repeat"].mean()) if nf and nr else float("nan")
        out[c] = {
            "loss_all": float(np.nanmean(ce)),
            "loss_first": float(u["first"].mean()) if nf else float("nan"),
            "loss_repeat": float(u["repeat"].mean()) if nr else float("nan"),
            "raw_benefit": raw,
            "raw_benefit_ci95": [float(np.nanpercentile(braw, 2.5)), float(np.nanpercentile(braw, 97.5))],
            "context_benefit": ctx,
            "context_benefit_ci95": [float(np.nanpercentile(braw - bbase, 2.5)),
                                     float(np.nanpercentile(braw - bbase, 97.5))],
            "repeat_gain_vs_baseline": float(base["repeat"].mean() - u["repeat"].mean()) if nr else float("nan"),
        }
    return out


# ----------------------------------------------------------------------------------------
# experiment 3
# ----------------------------------------------------------------------------------------
def rates_summary(counts: np.ndarray, token_ms: float) -> dict:
    """counts (Ttok, L, H, N) spikes per neuron per token -> rates in Hz = count / token duration."""
    per_neuron = counts.mean(0) / (token_ms / 1000.0)  # L,H,N
    flat = per_neuron.reshape(-1)
    return {
        "mean_hz": float(flat.mean()),
        "median_hz": float(np.median(flat)),
        "p90_hz": float(np.percentile(flat, 90)),
        "max_hz": float(flat.max()),
        "mean_hz_per_layer": [float(v) for v in per_neuron.reshape(per_neuron.shape[0], -1).mean(1)],
        "silent_fraction_never": float((flat == 0).mean()),
        "silent_fraction_per_token": float((counts == 0).mean()),
        "in_cortical_band_fraction": float(((flat >= CORTEX_BAND_HZ[0]) & (flat <= CORTEX_BAND_HZ[1])).mean()),
        "_per_neuron": flat,
    }


# ----------------------------------------------------------------------------------------
# the study
# ----------------------------------------------------------------------------------------
def biophysical_status() -> tuple[bool, str]:
    """Does the brian2 backend offer mode 'biophysical'? Checked at run time (module present and
    simulator importable), without running it."""
    import importlib.util

    from .backends import available

    if not available("brian2"):
        return False, "brian2 backend unavailable (simulator not installed)"
    if importlib.util.find_spec("bdh_spiking.backends.brian2.biophysical") is None:
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
    p, off = np.unravel_index(int(np.argmax(balance)), balance.shape)
    return int(p), int(off)


def synapse_of(index: int, shape: tuple, layers=None) -> list[int]:
    """Flat index of an x->residual synapse in (L, H, D, P) order -> [layer, head, d, pair k];
    layers maps analysed layer positions to model layers (default: the same)."""
    L, H, D, P = shape
    layer = int(index // (H * D * P))
    return [layers[layer] if layers is not None else layer, int(index // (D * P) % H), int(index // P % D),
            int(index % P)]


def increment_scores(a_hat: np.ndarray, xres: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """Passage-scale selectivity of every x->residual synapse (l, h, d, k): mean frame-free increment
    |x_t[d]| |q_t(pair k)| on the concept's bytes minus on the other bytes. a_hat (T, L, H, N),
    xres (T, L, D), lab (T,) bool with both classes present. Returns (L*H*D*P,)."""
    r = pair_norms(a_hat)  # T, L, H, P
    inc = np.abs(xres)[:, :, None, :, None] * r[:, :, :, None, :]  # T, L, H, D, P
    return (inc[lab].mean(0) - inc[~lab].mean(0)).reshape(-1)


def biophysical_runs(model, net, ids, labels, concepts, w, s: "StudySettings", seq_len: int, log: Log) -> dict:
    """The brian2 biophysical network on one short window, next to the reference executor (mode
    discrete) and the dense model on the same bytes: firing rates (experiment 3), chosen points of
    the memory sweep (intact, frozen from the start, decay with the first tau; experiment 2) and
    passage-scale selectivity of the plastic synapses with top-k overlap (experiment 1)."""
    from .backends import simulate

    n = min(s.bio_tokens, seq_len)
    p, off = passage_window(labels, seq_len, n)
    wids = ids[p:p + 1, off:off + n]
    lab = labels[p * seq_len + off: p * seq_len + off + n]
    tau = float(s.taus_ms[0])
    conds = {"intact": None, "frozen_from_start": {"freeze_after": 0},
             f"decay_tau_{tau:g}ms": {"decay_tau_tokens": tau / s.token_ms}}
    common = dict(timesteps=s.timesteps, coding="multispike", max_spikes=s.max_spikes)
    out = {"tokens": n, "window": {"passage": p, "offset": off, "text": bytes(wids[0].tolist()).decode("latin-1")},
           "token_ms": s.token_ms, "conditions": conds, "wall_s": {}}
    runs = {}
    for name, plast in conds.items():
        rec = ("counts", "decoded") if name == "intact" else ()
        monitors = ("spikes", "weights") if name == "intact" else ()  # the raster and weight figures
        t0 = time.perf_counter()
        bio = simulate(net, wids, backend="brian2", mode="biophysical", record=rec + monitors, plasticity=plast,
                       progress=True, token_ms=s.token_ms, monitor_neurons=min(32, net.dims.N), **common)
        out["wall_s"][name] = time.perf_counter() - t0
        log(f"biophysical run '{name}': {n} bytes in {out['wall_s'][name]:.0f} s")
        ref = simulate(net, wids, backend="reference", record=rec, plasticity=plast, **common)
        runs[name] = {"biophysical": bio, "reference": ref}
    intact = runs["intact"]
    out["settings"] = {k: v for k, v in intact["biophysical"].settings.items() if k != "biophysical"}
    out["params"] = intact["biophysical"].settings.get("biophysical")

    # experiment 3: rates of the same bytes in both networks
    counts = {src: {pop: r.records[f"{pop}_counts"][0].float().numpy() for pop in ("x", "y")}
              for src, r in intact.items()}
    out["_result"] = intact["biophysical"]  # for the figures; not written to results.json
    out["_per_neuron_hz"] = {}
    for pop in ("x", "y"):
        summary = rates_summary(counts["biophysical"][pop], s.token_ms)
        out["_per_neuron_hz"][pop] = summary["_per_neuron"]
        out[pop] = {k: v for k, v in summary.items() if not k.startswith("_")}
        out[f"{pop}_discrete_same_tokens"] = {k: v for k, v in rates_summary(counts["reference"][pop], s.token_ms)
                                              .items() if not k.startswith("_")}

    # experiment 2: chosen points of the sweep, loss over the window's targets
    with torch.no_grad():
        dense_loss = float(np.nanmean(token_losses(model(wids)[0], wids)))
    memory = {}
    for name in conds:
        row = {src: float(np.nanmean(token_losses(r.logits, wids))) for src, r in runs[name].items()}
        memory[name] = row
    for name, row in memory.items():
        for src in ("biophysical", "reference"):
            row[f"{src}_minus_intact"] = row[src] - memory["intact"][src]
    out["memory"] = {"loss_all": memory, "dense_intact": dense_loss}

    # experiment 1: passage-scale selectivity, same statistic on the same bytes for each network
    acts = {"dense": None, "reference": intact["reference"], "biophysical": intact["biophysical"]}
    with torch.no_grad():
        from .report import dense_reference

        d = dense_reference(model, wids, chunk=n)
    a_of = {"dense": d.a[0].float().numpy(), **{k: r.records["a_hat"][0].float().numpy()
                                                for k, r in acts.items() if r is not None}}
    g_of = {"dense": d.g, **{k: r.records["g_hat"] for k, r in acts.items() if r is not None}}
    xres_of = {k: residual_inputs(wids, g, w)[0].float().numpy() for k, g in g_of.items()}
    L, H, N = a_of["dense"].shape[1:]
    D, P = xres_of["dense"].shape[-1], N // 2
    sel = {}
    for ci, c in enumerate(concepts):
        y = lab[:, ci].astype(bool)
        if not y.any() or y.all():
            continue
        scores = {k: increment_scores(a_of[k], xres_of[k], y) for k in a_of}
        # only synapses that respond more on the concept; fewer than top_k of them: overlap undefined
        ranked = {k: [i for i in np.argsort(-v, kind="stable")[: s.top_k].tolist() if v[i] > 0]
                  for k, v in scores.items()}
        tops = {k: set(v) for k, v in ranked.items()}
        sel[c] = {
            "concept_bytes": int(y.sum()),
            "top": {k: [synapse_of(i, (L, H, D, P)) for i in v] for k, v in ranked.items()},
            "top_k_overlap": {f"{a}~{b}": (len(tops[a] & tops[b]) / s.top_k
                                           if min(len(tops[a]), len(tops[b])) == s.top_k else float("nan"))
                              for a, b in (("dense", "reference"), ("dense", "biophysical"),
                                           ("reference", "biophysical"))},
            "score_correlation": {f"{a}~{b}": float(np.corrcoef(scores[a], scores[b])[0, 1])
                                  for a, b in (("dense", "reference"), ("dense", "biophysical"),
                                               ("reference", "biophysical"))},
        }
    out["selectivity"] = sel
    return out


def load_inputs(s: StudySettings, log: Log):
    """Text, concepts and labels, validated before any model work."""
    from .text import read_bytes, shipped_text_path

    if s.text:
        data, text_name = read_bytes(s.text, what="study text"), s.text
    else:
        path = shipped_text_path("heldout")
        data, text_name = read_bytes(path), f"shipped:{path.name}"
    seq_len = min(s.seq_len, len(data))
    n_win = min(len(data) // seq_len, max(1, s.max_tokens // seq_len))
    if n_win == 0:
        raise TextError(f"study text of {len(data)} bytes is shorter than one passage of {seq_len}")
    used = bytes(data[: n_win * seq_len])
    if s.concepts_file:
        p = Path(s.concepts_file)
        if not p.is_file():
            raise TextError(f"concepts file not found: {p}")
        concepts = parse_concepts(p.read_text(encoding="utf-8", errors="replace").splitlines())
        if not concepts:
            raise TextError(f"concepts file {p} holds no concept (one per line)")
        explicit = True
    else:
        concepts = [codecs.decode(c, "unicode_escape") for c in DEFAULT_CONCEPTS]
        explicit = False
    labels, occ = concept_labels(used, concepts)
    missing = [c for c in concepts if not occ[c]]
    if missing and len(missing) == len(concepts):
        raise TextError(f"none of the concepts occurs in the {len(used)} bytes of {text_name} analysed: "
                        f"{', '.join(map(repr, missing))}")
    if missing:
        log(f"concepts without occurrences in the analysed text, dropped: {', '.join(map(repr, missing))}")
        keep = [i for i, c in enumerate(concepts) if occ[c]]
        concepts = [concepts[i] for i in keep]
        labels = labels[:, keep]
    return data, text_name, used, seq_len, n_win, concepts, labels, occ, explicit


def run_study(s: StudySettings, log: Log = print) -> dict:
    s.validate()
    started = time.perf_counter()
    rng = np.random.default_rng(s.seed)
    torch.manual_seed(s.seed)
    data, text_name, used, seq_len, n_win, concepts, labels, occ, explicit = load_inputs(s, log)
    from .checkpoint import load_checkpoint
    from .conversion import convert
    from .semantics import fold_weights
    from .text import shipped_text_path, to_ids

    model, info = load_checkpoint(s.checkpoint, n_layer=s.n_layer, log=log)
    log(f"model: {info['path']} ({info['format']}) config {info['config']}")
    calib = None
    if s.calibration_bytes:
        calib = bytes(np.frombuffer(shipped_text_path("calibration").read_bytes(), dtype=np.uint8)[: s.calibration_bytes])
    net = convert(model, gating="product", calibration=calib, seed=s.seed, design_max_spikes=s.max_spikes,
                  progress=True)
    log(f"converted in {net.provenance['conversion_seconds']:.1f} s")
    w = fold_weights(net, torch.device("cpu"), torch.float64)
    freqs = np.asarray(net.arrays["freqs"], dtype=np.float32)
    ids = to_ids(np.frombuffer(used, dtype=np.uint8)).view(n_win, seq_len)
    results = {
        "meta": {
            "bdh_spiking": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "model": {"path": str(info["path"]), "format": info["format"], "config": info["config"],
                      "sha256": info.get("sha256"), "val_loss": (info.get("meta") or {}).get("val_loss"),
                      "train_steps": (info.get("meta") or {}).get("steps")},
            "network": {"gating": net.gating, "v_init": net.v_init, "calibration": net.calibration.get("text"),
                        "calibration_bytes": net.calibration.get("bytes")},
            "backend": "reference", "text": text_name, "tokens": int(ids.numel()), "passages": n_win,
            "seq_len": seq_len, "settings": {k: (list(v) if isinstance(v, tuple) else v)
                                             for k, v in dataclasses.asdict(s).items()},
            "concepts": concepts, "concepts_source": s.concepts_file if explicit else "default",
            "concept_occurrences": {c: len(occ[c]) for c in concepts},
            "concept_tokens": {c: int(labels[:, i].sum()) for i, c in enumerate(concepts)},
        }
    }
    bio_ok, bio_msg = biophysical_status()
    log(bio_msg)
    results["meta"]["biophysical"] = {"available": bio_ok, "message": bio_msg}

    # -- runs ---------------------------------------------------------------------------
    log(f"[{time.perf_counter() - started:.0f} s] dense run: {n_win} passages x {seq_len} bytes")
    runs = {"dense": dense_activity(model, net, ids, w)}
    log(f"[{time.perf_counter() - started:.0f} s] spiking run (reference, multispike, T={s.timesteps}, K={s.max_spikes})")
    runs["spiking"] = spiking_activity(net, ids, w, s)
    Tt = ids.numel()

    # -- experiment 1 -------------------------------------------------------------------
    offsets = shift_offsets(Tt, s.shifts + 1, seq_len, rng)  # first one: the decoy
    cols = label_columns(labels, offsets)
    exp1 = {"shifts": offsets[1:], "decoy_shift": offsets[0], "variants": {}}
    top_sets = {}
    for name, act in runs.items():
        log(f"[{time.perf_counter() - started:.0f} s] experiment 1 on the {name} run")
        lay = list(s.layers) if s.layers is not None else list(range(act.a.shape[1]))
        full_act = act
        act = dataclasses.replace(act, a=act.a[:, lay], xres=act.xres[:, lay])
        L, H, N = act.a.shape[1:]
        D, P = act.xres.shape[2], N // 2
        inc = increment_selectivity(act, cols)

        def dec_inc(i, shape=(L, H, D, P), lay=lay):
            return synapse_of(i, shape, lay)

        sig = sigma_selectivity(act, cols)
        sig_ids = sig["ids"]
        summ_inc = summarize_selectivity(inc, concepts, s.fdr, s.top_k, dec_inc, rng)
        summ_sig = summarize_selectivity(sig, concepts, s.fdr, s.top_k,
                                         lambda i: [lay[int(sig_ids[i][0])]] + [int(v) for v in sig_ids[i][1:]], rng)
        exp1["variants"][name] = {
            "increments": {"candidates": int(inc["obs"].shape[0]), "per_concept": summ_inc},
            "sigma": {"stored_pairs": int(sig["obs"].shape[0]), "possible_pairs": int(sig["n_possible"]),
                      "stored_fraction": float(sig["obs"].shape[0] / sig["n_possible"]),
                      "per_concept": summ_sig},
        }
        top_sets[name] = (summ_inc, summ_sig)
        exp1["layers"] = lay
        del inc, sig, act, full_act
    overlaps = {}
    names = list(runs)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            a, b = names[i], names[j]
            overlaps[f"{a}~{b}"] = {"increments": top_overlap(top_sets[a][0], top_sets[b][0], concepts),
                                    "sigma": top_overlap(top_sets[a][1], top_sets[b][1], concepts)}
    exp1["top_k_overlap"] = overlaps
    traj = {}
    for c in concepts:
        tops = exp1["variants"]["spiking"]["increments"]["per_concept"][c]["top"][:3]
        traj[c] = [(t["synapse"], weight_trajectory(runs["spiking"], t["synapse"], seq_len, freqs)) for t in tops]
    results["experiment1"] = exp1

    # -- experiment 2 -------------------------------------------------------------------
    log(f"[{time.perf_counter() - started:.0f} s] experiment 2")
    n_sweep = max(1, min(n_win, s.sweep_tokens // seq_len))
    sweep_ids = ids[:n_sweep]
    units = collect_units(sweep_ids)
    log(f"memory sweep: {n_sweep} passages, {len(units['first'])} first occurrences, "
        f"{len(units['repeat'])} repeats (words >= {MIN_WORD_LEN} letters)")
    conds = {"intact": None, "frozen_from_start": {"freeze_after": 0}}
    for k in s.freeze_after:
        conds[f"freeze_after_{k}"] = {"freeze_after": int(k)}
    for m in s.reset_every:
        conds[f"reset_every_{m}"] = {"reset_every": int(m)}
    token_times = sorted({float(s.token_ms)} | {1000.0 / r for r in s.rates_cps})
    decay_map = {}
    for tm in token_times:
        for tau in s.taus_ms:
            tt = round(tau / tm, 9)
            decay_map[(tm, tau)] = tt
            conds.setdefault(f"decay_tau_tokens_{tt:g}", {"decay_tau_tokens": tt})
    from .backends import simulate

    ce = {}
    for cname, plast in tqdm(conds.items(), desc="plasticity conditions", leave=False):
        if cname == "intact":
            logits = runs["spiking"].logits[:n_sweep]
        else:
            logits = simulate(net, sweep_ids, timesteps=s.timesteps, coding="multispike", max_spikes=s.max_spikes,
                              plasticity=plast, chunk=seq_len).logits
        ce[cname] = token_losses(logits, sweep_ids)
    ce_dense = token_losses(runs["dense"].logits[:n_sweep], sweep_ids)
    table = memory_table(ce, units, "frozen_from_start", rng)
    dense_tab = memory_table({"dense_intact": ce_dense, "frozen_from_start": ce["frozen_from_start"]}, units,
                             "frozen_from_start", rng)
    decay_rows = [{"token_ms": tm, "chars_per_s": 1000.0 / tm, "tau_ms": tau, "tau_tokens": tt,
                   **{k: table[f"decay_tau_tokens_{tt:g}"][k] for k in ("context_benefit", "raw_benefit",
                                                                         "loss_repeat", "loss_first")}}
                  for (tm, tau), tt in sorted(decay_map.items())]
    results["experiment2"] = {
        "passages": n_sweep, "units": {k: len(v) for k, v in units.items()}, "conditions": conds,
        "table": table, "dense_intact": dense_tab["dense_intact"], "decay": decay_rows,
        "baseline": "frozen_from_start", "executor": "reference (discrete, multispike)",
    }
    bio = None
    if bio_ok and s.bio_tokens > 0:
        log(f"[{time.perf_counter() - started:.0f} s] brian2 biophysical runs ({s.bio_tokens} bytes x 3 conditions)")
        try:
            bio = biophysical_runs(model, net, ids, labels, concepts, w, s, seq_len, log)
        except Exception as exc:  # noqa: BLE001  (a backend failure must not sink the study)
            bio = {"error": f"{type(exc).__name__}: {exc}"}
    not_run = {"not_run": bio_msg if not bio_ok else "--bio-tokens 0"} if bio is None else None
    results["experiment2"]["biophysical_confirm"] = not_run or (
        {"error": bio["error"]} if "error" in bio else
        {k: bio[k] for k in ("tokens", "window", "token_ms", "conditions", "memory", "wall_s")})
    exp1["biophysical"] = not_run or ({"error": bio["error"]} if "error" in bio else
                                      {k: bio[k] for k in ("tokens", "window", "selectivity")})

    # -- experiment 3 -------------------------------------------------------------------
    log(f"[{time.perf_counter() - started:.0f} s] experiment 3 and figures")
    rate_src = runs["spiking"]
    rates = {"source": rate_src.name, "token_ms": s.token_ms,
             "conversion": "rate [Hz] = spikes per neuron per token / (token_ms / 1000)",
             "max_possible_hz": s.timesteps * s.max_spikes / (s.token_ms / 1000.0),
             "x": rates_summary(rate_src.x_counts, s.token_ms), "y": rates_summary(rate_src.y_counts, s.token_ms)}
    dense = runs["dense"]
    sparsity = {
        "dense_x_active_fraction": float((dense.a > 0).mean()),
        "dense_x_active_fraction_per_layer": [float(v) for v in (dense.a > 0).mean((0, 2, 3))],
        "dense_gated_active_fraction": float((dense.g > 0).mean()),
        "spiking_x_active_fraction": float((runs["spiking"].x_counts > 0).mean()),
        "spiking_y_active_fraction": float((runs["spiking"].y_counts > 0).mean()),
        "paper_reference": PAPER_SPARSITY,
    }
    results["experiment3"] = {"rates": {k: ({kk: vv for kk, vv in v.items() if not kk.startswith("_")}
                                            if isinstance(v, dict) else v) for k, v in rates.items()},
                              "sparsity": sparsity, "cortex_references": CORTEX_REFERENCES,
                              "cortex_band_hz": list(CORTEX_BAND_HZ)}
    results["experiment3"]["biophysical"] = not_run or (
        {"error": bio["error"]} if "error" in bio else
        {k: bio[k] for k in ("tokens", "window", "wall_s", "settings", "params", "x", "y", "x_discrete_same_tokens",
                             "y_discrete_same_tokens")})
    results["meta"]["wall_s"] = time.perf_counter() - started

    # -- outputs ------------------------------------------------------------------------
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    figs = write_figures(out, results, runs, traj, labels, concepts, rates, net, w, ids, s, seq_len, bio=bio)
    results["figures"] = figs
    from .fileio import atomic_write_text

    atomic_write_text(out / "results.json", json.dumps(_jsonable(results), indent=1, allow_nan=True))
    atomic_write_text(out / "report.md", render_report(results))
    return results


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


# ----------------------------------------------------------------------------------------
# figures and report
# ----------------------------------------------------------------------------------------
def write_figures(out, results, runs, traj, labels, concepts, rates, net, w, ids, s, seq_len, bio=None) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        files.append(name)

    # selectivity counts
    exp1 = results["experiment1"]["variants"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, kind in zip(axes, ("increments", "sigma")):
        width = 0.8 / len(exp1)
        for i, (name, v) in enumerate(exp1.items()):
            vals = [v[kind]["per_concept"][c]["selective"] for c in concepts]
            ax.bar(np.arange(len(concepts)) + i * width, vals, width, label=name)
        ax.set_xticks(np.arange(len(concepts)) + 0.4 - width / 2, [repr(c)[1:-1] for c in concepts], rotation=30)
        ax.set_ylabel(f"selective synapses (BH q={s.fdr})")
        ax.set_title("x->residual increments (b)" if kind == "increments" else "sigma co-firing (a)")
        ax.legend()
    save(fig, "selectivity_counts.png")

    # trajectories
    Tt = labels.shape[0]
    span = min(Tt, 4 * seq_len)
    fig, axes = plt.subplots(len(concepts), 1, figsize=(11, 1.9 * len(concepts)), squeeze=False)
    for ax, (c, tr) in zip(axes[:, 0], traj.items()):
        j = concepts.index(c)
        start = 0
        occ_tok = np.nonzero(labels[:, j])[0]
        if occ_tok.size:
            start = (occ_tok[0] // seq_len) * seq_len
        stop = min(Tt, start + span)
        t = np.arange(start, stop)
        for syn, y in tr:
            ax.plot(t * s.token_ms / 1000.0, y[start:stop], lw=1, label=f"l{syn[0]} h{syn[1]} d{syn[2]} pair{syn[3]}")
        lab = labels[start:stop, j]
        for k in np.nonzero(lab & ~np.r_[False, lab[:-1]])[0]:
            ax.axvline((start + k) * s.token_ms / 1000.0, color="r", alpha=0.4, lw=0.8)
        for b in range(start, stop, seq_len):
            ax.axvline(b * s.token_ms / 1000.0, color="k", ls=":", lw=0.6)
        ax.set_title(f"{c!r}: top synapses (spiking), |S[l,h][d, pair]|; red = occurrence, dotted = passage start",
                     fontsize=8)
        ax.legend(fontsize=6, loc="upper left")
    axes[-1, 0].set_xlabel(f"time [s] at {s.token_ms:g} ms per character")
    save(fig, "trajectories.png")

    # memory vs tau and vs token time
    rows = results["experiment2"]["decay"]
    tab = results["experiment2"]["table"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for tm in sorted({r["token_ms"] for r in rows}):
        rr = [r for r in rows if r["token_ms"] == tm]
        ax.plot([r["tau_ms"] for r in rr], [r["context_benefit"] for r in rr], "o-",
                label=f"{1000 / tm:g} char/s ({tm:g} ms)")
    ax.axhline(tab["intact"]["context_benefit"], color="k", ls="--", label="intact")
    ax.axhline(0, color="grey", lw=0.8, label="frozen from start (0 by definition)")
    ax.set_xscale("log")
    ax.set_xlabel("decay time constant tau [ms]")
    ax.set_ylabel("context benefit [nats/byte]")
    ax.legend(fontsize=7)
    save(fig, "memory_vs_tau.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    for tau in sorted({r["tau_ms"] for r in rows}):
        rr = sorted([r for r in rows if r["tau_ms"] == tau], key=lambda r: r["token_ms"])
        ax.plot([r["token_ms"] for r in rr], [r["context_benefit"] for r in rr], "o-", label=f"tau {tau:g} ms")
    ax.axhline(tab["intact"]["context_benefit"], color="k", ls="--", label="intact")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("presentation time per character [ms]")
    ax.set_ylabel("context benefit [nats/byte]")
    ax.legend(fontsize=7)
    save(fig, "memory_vs_token_time.png")

    # rates histogram
    fig, ax = plt.subplots(figsize=(6, 4))
    for pop in ("x", "y"):
        r = rates[pop]["_per_neuron"]
        pos = r[r > 0]
        if pos.size:
            ax.hist(np.log10(pos), bins=50, alpha=0.5, label=f"{pop} neurons ({rates[pop]['silent_fraction_never']:.1%} silent)")
    bio_ok = bio is not None and "_per_neuron_hz" in bio
    for pop in ("x", "y") if bio_ok else ():
        r = bio["_per_neuron_hz"][pop]
        pos = r[r > 0]
        if pos.size:
            ax.hist(np.log10(pos), bins=50, histtype="step", lw=1.2, density=False,
                    label=f"{pop}, brian2 biophysical ({bio['tokens']} bytes)")
    ax.axvspan(math.log10(CORTEX_BAND_HZ[0]), math.log10(CORTEX_BAND_HZ[1]), color="g", alpha=0.1,
               label="cortical mean rates ~0.1-10 Hz")
    ax.set_xlabel(f"log10 rate [Hz] (token = {s.token_ms:g} ms)")
    ax.set_ylabel("neurons")
    ax.legend(fontsize=7)
    save(fig, "rates_hist.png")

    # raster: exact per-step spikes of layer 0, head 0, first passage, recomputed from the currents
    from .semantics import neuron_step

    act = runs["spiking"]
    n_tok = min(seq_len, 24)
    n_show = 64  # neurons shown
    xr = torch.as_tensor(act.xres[:n_tok, 0], dtype=torch.float64)
    cur = xr @ w["W_x"][0, 0]  # n_tok, N
    v = torch.full_like(cur, net.v_init)
    times, neurons = [], []
    for step in range(s.timesteps):
        v, spk, _ = neuron_step(v, cur, "multispike", s.max_spikes, margin=False)
        tt, nn = torch.nonzero(spk > 0, as_tuple=True)
        times.append(((tt.double() + (step + 0.5) / s.timesteps) * s.token_ms).numpy())
        neurons.append(nn.numpy())
    counts = act.x_counts[:n_tok, 0, 0]
    check = int(np.abs(counts - np.array(_step_counts(cur, net.v_init, s))).max())
    results["experiment3"]["raster_count_check_max_diff"] = check
    fig, ax = plt.subplots(figsize=(11, 4))
    tt_all, nn_all = np.concatenate(times), np.concatenate(neurons)
    keep = nn_all < n_show
    ax.scatter(tt_all[keep], nn_all[keep], s=12, c="k", marker="|")
    text = bytes(ids[0, :n_tok].tolist()).decode("utf-8", "replace")
    for i, ch in enumerate(text):
        ax.text((i + 0.5) * s.token_ms, -4, repr(ch)[1:-1], ha="center", fontsize=8)
    for i in range(n_tok + 1):
        ax.axvline(i * s.token_ms, color="grey", lw=0.3)
    ax.set_xlabel("time [ms]")
    ax.set_ylabel(f"x neuron 0-{n_show - 1} (layer 0, head 0)")
    ax.set_title(f"spike raster, first {n_tok} characters (T={s.timesteps} steps per {s.token_ms:g} ms character)")
    save(fig, "raster.png")
    if bio_ok:
        from .biophysical_figures import plot_monitors

        files += [Path(f).name for f in plot_monitors(bio["_result"], out, prefix="biophysical")]
    return files


def _step_counts(cur, v_init, s):
    from .semantics import SimSettings, run_population

    c, _ = run_population(cur, SimSettings(timesteps=s.timesteps, coding="multispike", max_spikes=s.max_spikes),
                          v_init, margins=False)
    return c.numpy()


def _window(b: dict) -> str:
    w = b["window"]
    return f"{b['tokens']} bytes (passage {w['passage']}, offset {w['offset']}: {w['text']!r})"


def _f(v, nd=3):
    return "nan" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{nd}f}"


def summary_lines(results: dict) -> list[str]:
    """The numbers printed by bdh-study (the test checks they match results.json)."""
    lines = []
    for name, v in results["experiment1"]["variants"].items():
        for kind in ("increments", "sigma"):
            sel = ", ".join(f"{c!r}={d['selective']}" for c, d in v[kind]["per_concept"].items())
            lines.append(f"exp1 {name} {kind} selective: {sel}")
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


def render_report(res: dict) -> str:
    m = res["meta"]
    st = m["settings"]
    L = []
    add = L.append
    add("# bdh-study report\n")
    add(f"Model: `{m['model']['path']}` ({m['model']['format']} format, sha256 {str(m['model'].get('sha256'))[:16]}..., "
        f"{m['model'].get('train_steps')} training steps, recorded validation loss {m['model'].get('val_loss')}), "
        f"config `{m['model']['config']}`.  ")
    add(f"Network: gating {m['network']['gating']}, v_init {m['network']['v_init']}, calibrated on "
        f"{m['network']['calibration']} ({m['network']['calibration_bytes']} bytes).  ")
    add(f"Backend: reference executor, mode discrete, multispike coding, T = {st['timesteps']} steps per character, "
        f"K = {st['max_spikes']} spikes per step; dense = the float64 parallel form (graded T=1 is exactly dense).  ")
    add(f"Biophysical mode: {m['biophysical']['message']}.  ")
    add(f"Text: {m['text']}, {m['tokens']} bytes as {m['passages']} passages of {m['seq_len']} (plastic state "
        f"reset at each passage).  ")
    add(f"Seed: {st['seed']}; quick: {st['quick']}; token time {st['token_ms']:g} ms "
        f"({1000 / st['token_ms']:g} characters/s), simulation step {st['dt_ms']:g} ms; wall time {m['wall_s']:.0f} s; "
        f"bdh_spiking {m['bdh_spiking']}, torch {m['torch']}.\n")
    add("Every number below is in `results.json` of the same run; definitions and limits: docs/study.md.\n")

    add("## 1. Synapses that carry concepts\n")
    add(f"Concepts ({m['concepts_source']}): " + ", ".join(
        f"{c!r} ({m['concept_occurrences'][c]} occurrences, {m['concept_tokens'][c]} tokens)" for c in m["concepts"]) + ".\n")
    add("Two kinds of synapse: **(b)** the executed plastic synapses S[l,h] (residual unit d <- x-neuron pair k), "
        "scored by the frame-free magnitude of each token's increment |x_t[d]| * |q_t(pair k)| (the rotation by the "
        "token's own phase preserves a pair's norm); **(a)** the neuron-to-neuron state "
        "sigma_{l,h}[i,j] = sum_t a_t[i] a_t[j] (i<j, same layer and head), the spike-count reconstruction of "
        "E_h^T S restricted to neurons that fire, scored by its per-token increment's support (both neurons fire). "
        "Selectivity: one-sided AUROC of the increment against the concept's presence; null: "
        f"{st['shifts']} circular shifts of the labels pooled over the candidates of the same activity stratum; "
        f"Benjamini-Hochberg at q = {st['fdr']}. The decoy column is one more circular shift, tested like a "
        "concept but kept out of the null: its discoveries estimate false positives.\n")
    e1 = res["experiment1"]
    add(f"Layers analysed: {e1.get('layers')}; null shifts (tokens): {e1['shifts']}; decoy shift: {e1['decoy_shift']}. "
        "'selective above own null' additionally requires the observed AUROC to exceed every shifted-label AUROC "
        "of the same synapse.\n")
    for kind, title in (("increments", "(b) x->residual synapses"), ("sigma", "(a) sigma pairs")):
        add(f"### {title}\n")
        add("| variant | concept | candidates | selective | selective above own null | decoy selective | max AUROC | "
            "null AUROC p99 | top synapse (AUROC) |")
        add("|---|---|---|---|---|---|---|---|---|")
        for name, v in e1["variants"].items():
            for c, d in v[kind]["per_concept"].items():
                top = d["top"][0] if d["top"] else None
                add(f"| {name} | {c!r} | {d['candidates']} | {d['selective']} | {d['selective_above_own_null']} | "
                    f"{d['decoy_selective']} | "
                    f"{_f(d['max_auroc'])} | {_f(d['null_auroc_p99'])} | "
                    f"{top['synapse'] if top else '-'} ({_f(top['auroc']) if top else '-'}) |")
        if kind == "sigma":
            for name, v in e1["variants"].items():
                add(f"\n{name}: sigma stored {v['sigma']['stored_pairs']} of {v['sigma']['possible_pairs']} "
                    f"possible pairs ({v['sigma']['stored_fraction']:.1%}) (pairs that ever co-fire).")
        add("")
    add(f"Top-{st['top_k']} overlap (fraction of shared synapses, by AUROC):\n")
    add("| pair of variants | kind | " + " | ".join(repr(c) for c in m["concepts"]) + " |")
    add("|---|---|" + "---|" * len(m["concepts"]))
    for pair, ov in e1["top_k_overlap"].items():
        for kind in ("increments", "sigma"):
            add(f"| {pair} | {kind} | " + " | ".join(_f(ov[kind][c], 2) for c in m["concepts"]) + " |")
    b1 = e1.get("biophysical", {})
    if "selectivity" in b1:
        add(f"\nSame synapses in the brian2 biophysical network? On {_window(b1)} (the window closest to half concept "
            "bytes), each network's x->residual synapses are scored by their mean frame-free increment on the "
            "concept's bytes minus on the other bytes (too few bytes for the AUROC null above); top-"
            f"{st['top_k']} overlap and the correlation of the scores over all synapses:\n")
        add("| concept | concept bytes | overlap dense~ref | dense~bio | ref~bio | corr dense~ref | dense~bio | ref~bio |")
        add("|---|---|---|---|---|---|---|---|")
        for c, d in b1["selectivity"].items():
            o, r_ = d["top_k_overlap"], d["score_correlation"]
            pairs = ("dense~reference", "dense~biophysical", "reference~biophysical")
            add(f"| {c!r} | {d['concept_bytes']} | " + " | ".join(_f(o[k], 2) for k in pairs) + " | "
                + " | ".join(_f(r_[k], 3) for k in pairs) + " |")
        if not b1["selectivity"]:
            add("(no concept both occurs in the window and leaves bytes without it)")
    else:
        add(f"\nBiophysical network: {b1.get('error') or b1.get('not_run')}.")
    add("\n![selective synapses](selectivity_counts.png)\n")
    add("![weight trajectories](trajectories.png)\n")

    add("## 2. Is the memory in the synapses?\n")
    e2 = res["experiment2"]
    add(f"{e2['passages']} passages; units: {e2['units']['first']} first occurrences and {e2['units']['repeat']} "
        f"repeats of words of >= {MIN_WORD_LEN} letters recurring (byte-identical) within a passage; the targets "
        "are a unit's letters after its first. raw benefit = loss(first) - loss(repeat); context benefit = raw "
        "benefit minus that of the network frozen from the start (no synaptic memory at all), so it is 0 for that "
        "condition by definition. 95% intervals: bootstrap over units (500 resamples). Executor: "
        f"{e2['executor']}.\n")
    add("| condition | loss all | loss first | loss repeat | raw benefit [95% CI] | context benefit [95% CI] |")
    add("|---|---|---|---|---|---|")
    for cname, r in list(e2["table"].items()) + [("dense (intact, float64)", e2["dense_intact"])]:
        add(f"| {cname} | {_f(r['loss_all'])} | {_f(r['loss_first'])} | {_f(r['loss_repeat'])} | "
            f"{_f(r['raw_benefit'])} [{_f(r['raw_benefit_ci95'][0])}, {_f(r['raw_benefit_ci95'][1])}] | "
            f"{_f(r['context_benefit'])} [{_f(r['context_benefit_ci95'][0])}, {_f(r['context_benefit_ci95'][1])}] |")
    add("\nDecay sweep (tau_tokens = tau_ms / token_ms):\n")
    add("| characters/s | token ms | tau ms | tau tokens | context benefit |")
    add("|---|---|---|---|---|")
    for r in e2["decay"]:
        add(f"| {r['chars_per_s']:g} | {r['token_ms']:g} | {r['tau_ms']:g} | {r['tau_tokens']:g} | "
            f"{_f(r['context_benefit'])} |")
    add("\n![benefit vs tau](memory_vs_tau.png) ![benefit vs token time](memory_vs_token_time.png)\n")
    bc = e2.get("biophysical_confirm", {})
    if "memory" in bc:
        mem = bc["memory"]
        add(f"Chosen points in the brian2 biophysical network ({_window(bc)}, {bc['token_ms']:g} ms per byte), next to "
            "the reference executor on the same bytes; loss over the window's targets (too few word repeats in "
            "so short a window to split first/repeat, so the whole window's loss and its change against intact "
            f"plasticity are compared). Dense model, intact: {_f(mem['dense_intact'])}.\n")
        add("| condition | reference loss | biophysical loss | reference - intact | biophysical - intact |")
        add("|---|---|---|---|---|")
        for cname, row in mem["loss_all"].items():
            add(f"| {cname} | {_f(row['reference'])} | {_f(row['biophysical'])} | {_f(row['reference_minus_intact'])} | "
                f"{_f(row['biophysical_minus_intact'])} |")
        add("")
    else:
        add(f"Biophysical confirmation: {bc.get('error') or bc.get('not_run')}.\n")

    add("## 3. Is the activity biological?\n")
    e3 = res["experiment3"]
    r = e3["rates"]
    add(f"Source: {r['source']} run. Conversion: {r['conversion']} with token_ms = {r['token_ms']:g} "
        f"(at most {r['max_possible_hz']:g} Hz: T*K spikes per token).\n")
    add("| population | mean Hz | median Hz | p90 Hz | max Hz | never fire | silent per token | in 0.1-10 Hz |")
    add("|---|---|---|---|---|---|---|---|")
    for pop in ("x", "y"):
        p = r[pop]
        add(f"| {pop} | {_f(p['mean_hz'], 2)} | {_f(p['median_hz'], 2)} | {_f(p['p90_hz'], 2)} | {_f(p['max_hz'], 1)} | "
            f"{p['silent_fraction_never']:.1%} | {p['silent_fraction_per_token']:.1%} | {p['in_cortical_band_fraction']:.1%} |")
    bio = e3.get("biophysical", {})
    if "x" in bio:
        add(f"\nbrian2 biophysical run (LIF, physical units) on {_window(bio)} at {r['token_ms']:g} ms per "
            f"byte ({bio['wall_s']['intact']:.0f} s wall), next to the discrete network on the same bytes:\n")
        add("| population | biophysical mean Hz | biophysical never fire | discrete mean Hz (same bytes) | discrete never fire |")
        add("|---|---|---|---|---|")
        for pop in ("x", "y"):
            b, d = bio[pop], bio[f"{pop}_discrete_same_tokens"]
            add(f"| {pop} | {_f(b['mean_hz'], 2)} | {b['silent_fraction_never']:.1%} | {_f(d['mean_hz'], 2)} | "
                f"{d['silent_fraction_never']:.1%} |")
    else:
        add(f"\nbrian2 biophysical run: {bio.get('error') or bio.get('not_run')}.")
    sp = e3["sparsity"]
    add(f"\nDense activation sparsity: x neurons > 0 in {sp['dense_x_active_fraction']:.1%} of (neuron, token) "
        f"(per layer {', '.join(f'{v:.1%}' for v in sp['dense_x_active_fraction_per_layer'])}); gated values > 0: "
        f"{sp['dense_gated_active_fraction']:.1%}; spiking x active {sp['spiking_x_active_fraction']:.1%}, y active "
        f"{sp['spiking_y_active_fraction']:.1%}. The BDH paper reports ~{sp['paper_reference']:.0%} active neurons "
        "for its trained models.\n")
    add("Cortical reference points (sources checked):\n")
    for ref in e3["cortex_references"]:
        add(f"- {ref['source']}: {ref['claim']}.")
    add(f"\nRaster: exact per-step spikes recomputed from the recorded currents (max count difference against the "
        f"run: {e3.get('raster_count_check_max_diff', 'n/a')}).\n")
    add("![rates](rates_hist.png)\n\n![raster](raster.png)\n")
    if "biophysical_raster.png" in res.get("figures", []):
        add("brian2 biophysical network on its window: spike raster of the first neurons of head 0 in every layer, "
            "and fixed-frame plastic weights of a few synapses of every layer, token by token:\n")
        add("\n\n".join(f"![biophysical {n}](biophysical_{n}.png)" for n in ("raster", "weights")
                         if f"biophysical_{n}.png" in res["figures"]) + "\n")
    return "\n".join(L) + "\n"
