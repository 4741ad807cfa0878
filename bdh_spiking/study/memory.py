"""Experiment 2, is the memory in the synapses? Next-byte loss on repeated words under intact,
frozen, reset and decaying plasticity (decay time constants in ms of biological time)."""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F
from ..progress import bar as tqdm

from .statistics import bootstrap_indices

MIN_WORD_LEN = 4
BASELINE = "frozen_from_start"  # the network without any synaptic memory


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
    boot_f = bootstrap_indices(rng, nf, n_boot)
    boot_r = bootstrap_indices(rng, nr, n_boot)
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


def plasticity_conditions(settings) -> tuple[dict, dict]:
    """The sweep's conditions (name -> plasticity) and the decay points (token_ms, tau_ms) -> tau_tokens."""
    conds = {"intact": None, BASELINE: {"freeze_after": 0}}
    for tokens in settings.freeze_after:
        conds[f"freeze_after_{tokens}"] = {"freeze_after": int(tokens)}
    for tokens in settings.reset_every:
        conds[f"reset_every_{tokens}"] = {"reset_every": int(tokens)}
    token_times = sorted({float(settings.token_ms)} | {1000.0 / r for r in settings.rates_cps})
    decay_map = {}
    for token_ms in token_times:
        for tau in settings.taus_ms:
            tau_tokens = round(tau / token_ms, 9)
            decay_map[(token_ms, tau)] = tau_tokens
            conds.setdefault(f"decay_tau_tokens_{tau_tokens:g}", {"decay_tau_tokens": tau_tokens})
    return conds, decay_map


def _condition_losses(net, sweep_ids, conds, intact_logits, settings, seq_len: int) -> dict:
    """Next-byte losses of the reference executor under each condition ('intact' is the spiking run)."""
    from ..backends import simulate

    ce = {}
    for cname, plast in tqdm(conds.items(), desc="plasticity conditions", leave=False):
        if cname == "intact":
            logits = intact_logits
        else:
            logits = simulate(net, sweep_ids, timesteps=settings.timesteps, coding="multispike",
                              max_spikes=settings.max_spikes, plasticity=plast, chunk=seq_len).logits
        ce[cname] = token_losses(logits, sweep_ids)
    return ce


def run_memory(net, ids, runs: dict, settings, seq_len: int, rng, log) -> dict:
    """Experiment 2 on the first passages: the condition table, the dense model and the decay sweep."""
    n_sweep = max(1, min(ids.shape[0], settings.sweep_tokens // seq_len))
    sweep_ids = ids[:n_sweep]
    units = collect_units(sweep_ids)
    log(f"memory sweep: {n_sweep} passages, {len(units['first'])} first occurrences, "
        f"{len(units['repeat'])} repeats (words >= {MIN_WORD_LEN} letters)")
    conds, decay_map = plasticity_conditions(settings)
    ce = _condition_losses(net, sweep_ids, conds, runs["spiking"].logits[:n_sweep], settings, seq_len)
    ce_dense = token_losses(runs["dense"].logits[:n_sweep], sweep_ids)
    table = memory_table(ce, units, BASELINE, rng)
    dense_tab = memory_table({"dense_intact": ce_dense, BASELINE: ce[BASELINE]}, units, BASELINE, rng)
    decay_rows = [{"token_ms": token_ms, "chars_per_s": 1000.0 / token_ms, "tau_ms": tau, "tau_tokens": tau_tokens,
                   **{k: table[f"decay_tau_tokens_{tau_tokens:g}"][k] for k in ("context_benefit", "raw_benefit",
                                                                                "loss_repeat", "loss_first")}}
                  for (token_ms, tau), tau_tokens in sorted(decay_map.items())]
    return {
        "passages": n_sweep, "units": {k: len(v) for k, v in units.items()}, "conditions": conds,
        "table": table, "dense_intact": dense_tab["dense_intact"], "decay": decay_rows,
        "baseline": BASELINE, "executor": "reference (discrete, multispike)",
    }
