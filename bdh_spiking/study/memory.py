"""Experiment 2, is the memory in the synapses? Next-byte loss on repeated words, paired by word,
under intact, scrambled-context, lesioned, frozen, reset and decaying plasticity (one decay axis:
tau_tokens = tau_ms / token_ms)."""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F
from ..progress import bar as tqdm

from .memory_stats import hold_time, intact_cluster_ci, paired_analysis

MIN_WORD_LEN = 4
BASELINE = "scrambled_context"  # S built from another passage, then read only: pathway alive, content wrong
LESION = "frozen_from_start"  # S = 0 throughout: the y neurons are silent, a lesion of the whole pathway
SCRAMBLED = ("another passage of the sweep (n/2 passages away) first, then this passage with writes frozen at "
             "its first byte: S holds the other passage, the pathway is alive, the content is wrong")


def word_units(window: bytes, min_len: int = MIN_WORD_LEN) -> dict:
    """Occurrences of words (maximal runs of ASCII letters, >= min_len, exact bytes) in one passage.

    repeat: an occurrence whose word occurred earlier in the same passage; first: the first
    occurrence of a word that recurs later in it. A unit's target positions are its letters
    except the first (the first letter of a repeat cannot be known from context)."""
    seen, units = {}, {"first": [], "repeat": []}
    occ = [(m.start(), m.end(), m.group()) for m in re.finditer(rb"[A-Za-z]+", window) if len(m.group()) >= min_len]
    counts = {}
    for _, _, word in occ:
        counts[word] = counts.get(word, 0) + 1
    for start, end, word in occ:
        targets = list(range(start + 1, end))
        if word in seen:
            units["repeat"].append(targets)
        elif counts[word] > 1:
            units["first"].append(targets)
        seen[word] = True
    return units


def token_losses(logits: torch.Tensor, ids: torch.Tensor) -> np.ndarray:
    """ce[b, p] = loss of predicting byte p from position p-1 (ce[:, 0] = nan)."""
    lp = F.log_softmax(logits.double(), -1)
    ce = -lp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
    out = np.full(ids.shape, np.nan)
    out[:, 1:] = ce.numpy()
    return out


def word_groups(window: bytes, min_len: int = MIN_WORD_LEN) -> list:
    """Each word that recurs in the passage (exact bytes, >= min_len letters): its first occurrence's
    targets and every repeat's targets (a unit's letters after its first, as in ``word_units``)."""
    groups = {}
    for m in re.finditer(rb"[A-Za-z]+", window):
        if len(m.group()) >= min_len:
            groups.setdefault(m.group(), []).append(list(range(m.start() + 1, m.end())))
    return [{"word": w.decode("ascii"), "first": occ[0], "repeats": occ[1:]} for w, occ in groups.items()
            if len(occ) > 1]


def collect_words(ids: torch.Tensor, min_len: int = MIN_WORD_LEN) -> list:
    """``word_groups`` of every passage, each with its passage index: the pairing units."""
    return [{"passage": b, **g} for b in range(ids.shape[0]) for g in word_groups(bytes(ids[b].tolist()), min_len)]


def decay_points(settings) -> dict:
    """tau_tokens -> the (chars/s, tau_ms) settings that map onto it: the decay of a trace depends on
    tau_ms / token_ms only, so rates and taus are one axis."""
    token_times = sorted({float(settings.token_ms)} | {1000.0 / r for r in settings.rates_cps})
    points = {}
    for token_ms in token_times:
        for tau in settings.taus_ms:
            points.setdefault(round(tau / token_ms, 9), []).append({"chars_per_s": 1000.0 / token_ms, "tau_ms": tau})
    return dict(sorted(points.items()))


def plasticity_conditions(settings) -> dict:
    """The sweep's conditions: name -> plasticity switches (the scrambled context also changes the input)."""
    conds = {"intact": None, BASELINE: "scrambled", LESION: {"freeze_after": 0}}
    for tokens in settings.freeze_after:
        conds[f"freeze_after_{tokens}"] = {"freeze_after": int(tokens)}
    for tokens in settings.reset_every:
        conds[f"reset_every_{tokens}"] = {"reset_every": int(tokens)}
    for tau_tokens in decay_points(settings):
        conds[f"decay_tau_tokens_{tau_tokens:g}"] = {"decay_tau_tokens": tau_tokens}
    return conds


def scramble_partner(n_passages: int) -> np.ndarray:
    """The passage whose S each passage reads in the scrambled context: n/2 passages away (cyclically)."""
    return (np.arange(n_passages) + max(1, n_passages // 2)) % n_passages


def _run_condition(net, sweep_ids, plast, settings, seq_len: int) -> tuple[torch.Tensor, float]:
    """Logits on the sweep's passages and the fraction of y neurons active per token there.

    'scrambled': each passage after another passage's bytes, writes frozen at its first byte."""
    from ..backends import simulate

    ids, offset = sweep_ids, 0
    if plast == "scrambled":
        ids = torch.cat([sweep_ids[torch.from_numpy(scramble_partner(sweep_ids.shape[0]))], sweep_ids], 1)
        plast, offset = {"freeze_after": seq_len}, seq_len
    r = simulate(net, ids, timesteps=settings.timesteps, coding="multispike", max_spikes=settings.max_spikes,
                 plasticity=plast, chunk=seq_len)
    d = net.dims
    y_frac = float(r.stats["y_active"][:, offset:].mean()) / (d.L * d.H * d.N)
    return r.logits[:, offset:], y_frac


def _condition_losses(net, sweep_ids, conds, runs: dict, settings, seq_len: int) -> tuple[dict, dict]:
    """Next-byte losses and y-active fractions of the reference executor under each condition
    ('intact' is the study's spiking run)."""
    ce, y_active = {}, {}
    n = sweep_ids.shape[0]
    for cname, plast in tqdm(conds.items(), desc="plasticity conditions", leave=False):
        if cname == "intact":
            logits = runs["spiking"].logits[:n]
            y_active[cname] = float((runs["spiking"].y_counts[: n * seq_len] > 0).mean())
        else:
            logits, y_active[cname] = _run_condition(net, sweep_ids, plast, settings, seq_len)
        ce[cname] = token_losses(logits, sweep_ids)
    return ce, y_active


def replace_first_occurrences(ids: torch.Tensor, words: list, seed: int) -> torch.Tensor:
    """A copy of ids with every recurring word's first occurrence replaced by random letters of the same
    case (numpy default_rng([seed, 41])): the repeats, and every other byte, stay as they were."""
    rng = np.random.default_rng([seed, 41])
    out = ids.clone()
    for w in words:
        for p in range(w["first"][0] - 1, w["first"][-1] + 1):
            base = 65 if 65 <= int(ids[w["passage"], p]) <= 90 else 97
            out[w["passage"], p] = base + int(rng.integers(0, 26))
    return out


def replaced_first_gain(net, sweep_ids, words, intact_ce: np.ndarray, settings, seq_len: int, idx) -> dict:
    """Loss of each word's repeats when its first occurrence was replaced (intact plasticity, pathway and
    local context alive, the earlier occurrence gone) minus their intact loss, paired by word."""
    from .memory_stats import paired_mean, word_losses

    ids = replace_first_occurrences(sweep_ids, words, settings.seed)
    logits, y_frac = _run_condition(net, ids, None, settings, seq_len)
    rep_replaced = word_losses(token_losses(logits, ids), words)[1]
    gain, ci = paired_mean(rep_replaced - word_losses(intact_ce, words)[1], idx)
    return {"repeat_gain": gain, "repeat_gain_ci95": ci, "loss_repeat": float(rep_replaced.mean()) if words else
            float("nan"), "y_active_fraction": y_frac,
            "definition": "loss(repeat | first occurrence replaced by random letters) - loss(repeat | intact)"}


def _decay_rows(table: dict, points: dict) -> list:
    return [{"tau_tokens": t, "settings": origins, "context_benefit": table[f"decay_tau_tokens_{t:g}"]["context_benefit"],
             "context_benefit_ci95": table[f"decay_tau_tokens_{t:g}"]["context_benefit_ci95"],
             "raw_benefit": table[f"decay_tau_tokens_{t:g}"]["raw_benefit"]} for t, origins in points.items()]


def run_memory(net, ids, runs: dict, settings, seq_len: int, rng, log) -> dict:
    """Experiment 2 on the first passages: the paired condition table, the dense model, the decay sweep
    on its one axis (tau_tokens) and the hold time against the scrambled-context floor."""
    n_sweep = max(1, min(ids.shape[0], settings.sweep_tokens // seq_len))
    sweep_ids = ids[:n_sweep]
    words = collect_words(sweep_ids)
    log(f"memory sweep: {n_sweep} passages, {len(words)} recurring words "
        f"({sum(len(w['repeats']) for w in words)} repeats; words >= {MIN_WORD_LEN} letters)")
    conds = plasticity_conditions(settings)
    baseline = BASELINE
    if n_sweep < 2:  # no other passage to build a scrambled context from
        conds.pop(BASELINE)
        baseline = LESION
        log("memory sweep: one passage only, the baseline is the pathway lesion (frozen from the start)")
    ce, y_active = _condition_losses(net, sweep_ids, conds, runs, settings, seq_len)
    ce["dense_intact"] = token_losses(runs["dense"].logits[:n_sweep], sweep_ids)
    table, per, idx = paired_analysis(ce, words, baseline, rng)
    for cname, frac in y_active.items():
        table[cname]["y_active_fraction"] = frac
    dense = table.pop("dense_intact")
    points = decay_points(settings)
    decay = {f"decay_tau_tokens_{t:g}": t for t in points}
    return {
        "passages": n_sweep, "units": {"words": len(words), "first": len(words),
                                       "repeat": sum(len(w["repeats"]) for w in words)},
        "conditions": {c: (SCRAMBLED if p == "scrambled" else p) for c, p in conds.items()},
        "table": table, "dense_intact": dense,
        "decay": _decay_rows(table, points), "hold_time": hold_time(per, decay, baseline, idx),
        "intact_by_passage": intact_cluster_ci(per, words, baseline, np.random.default_rng([settings.seed, 43])),
        "first_occurrence_replaced": replaced_first_gain(net, sweep_ids, words, ce["intact"], settings, seq_len, idx),
        "baseline": baseline, "lesion": LESION, "n_boot": int(idx.shape[0]),
        "scramble_partner_offset": max(1, n_sweep // 2), "executor": "reference (discrete, multispike)",
    }
