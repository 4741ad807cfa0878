"""Experiment 1, synapses that carry concepts: per-token increments of (a) the neuron-to-neuron
state sigma reconstructed from spike counts and (b) the executed x-neuron -> residual synapses,
frame-free; AUROC against a concept's presence, a circular-shift null, Benjamini-Hochberg FDR."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from ..progress import bar as tqdm

from ..semantics import oscillator_cos_sin, oscillator_payload
from .activity import Activity
from .statistics import auroc_binary, auroc_dense, auroc_sparse, label_columns, select, shift_offsets


def pair_norms(a: np.ndarray) -> np.ndarray:
    """|q| per oscillator pair = |a| per pair (rotation-invariant): (..., N) -> (..., N/2)."""
    return np.sqrt(a[..., 0::2] ** 2 + a[..., 1::2] ** 2)


def synapse_of(index: int, shape: tuple, layers=None) -> list[int]:
    """Flat index of an x->residual synapse in (L, H, D, n_pairs) order -> [layer, head, d, pair k];
    layers maps analysed layer positions to model layers (default: the same)."""
    _, n_heads, n_res, n_pairs = shape
    layer = int(index // (n_heads * n_res * n_pairs))
    return [layers[layer] if layers is not None else layer, int(index // (n_res * n_pairs) % n_heads),
            int(index // n_pairs % n_res), int(index % n_pairs)]


def increment_scores(a_hat: np.ndarray, xres: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """Passage-scale selectivity of every x->residual synapse (l, h, d, k): mean frame-free increment
    |x_t[d]| |q_t(pair k)| on the concept's bytes minus on the other bytes. a_hat (T, L, H, N),
    xres (T, L, D), lab (T,) bool with both classes present. Returns (L*H*D*n_pairs,)."""
    r = pair_norms(a_hat)  # T, L, H, n_pairs
    inc = np.abs(xres)[:, :, None, :, None] * r[:, :, :, None, :]  # T, L, H, D, n_pairs
    return (inc[lab].mean(0) - inc[~lab].mean(0)).reshape(-1)


def increment_selectivity(act: Activity, cols: np.ndarray, progress=True) -> dict:
    """(b) frame-free increments |x_t[d]| * |q_t(pair k)| of every x->residual synapse (l,h,d,k).

    Returns obs (n_synapses, C), null (n_synapses, C, S) AUROCs and the activity fraction per synapse."""
    n_tokens, n_layers, n_heads, n_neurons = act.x_activity.shape
    n_res = act.xres.shape[2]
    n_pairs = n_neurons // 2
    n_cols = cols.shape[1] * cols.shape[2]
    lab = cols.reshape(n_tokens, n_cols)
    n_synapses = n_layers * n_heads * n_res * n_pairs
    au = np.empty((n_synapses, n_cols), dtype=np.float32)
    activity = np.empty(n_synapses, dtype=np.float32)
    r_all = pair_norms(act.x_activity)  # n_tokens, L, H, n_pairs
    bar = tqdm(total=n_layers * n_heads * n_pairs, desc=f"selectivity x->residual ({act.name})",
               disable=not progress, leave=False)
    vectorised = n_tokens <= 1024  # small runs: one sort per head; large runs: only the active tokens, per pair
    for layer in range(n_layers):
        xabs = np.abs(act.xres[:, layer])  # n_tokens, D
        for h in range(n_heads):
            r = r_all[:, layer, h]  # n_tokens, n_pairs
            base = (layer * n_heads + h) * n_res * n_pairs
            if vectorised:
                vals = (xabs.T[:, None, :] * r.T[None, :, :]).reshape(n_res * n_pairs, n_tokens)  # d * n_pairs + k
                au[base: base + n_res * n_pairs] = auroc_dense(vals, lab)
                activity[base: base + n_res * n_pairs] = np.tile((r > 0).mean(0), n_res)
                bar.update(n_pairs)
                continue
            for k in range(n_pairs):
                active = np.nonzero(r[:, k] > 0)[0]
                vals = (xabs[active] * r[active, k][:, None]).T  # D, n
                idx = base + np.arange(n_res) * n_pairs + k
                au[idx] = auroc_sparse(vals, active, lab)
                activity[idx] = active.size / n_tokens
                bar.update(1)
    bar.close()
    au = au.reshape(n_synapses, cols.shape[1], cols.shape[2])
    return {"obs": au[:, :, 0], "null": au[:, :, 1:], "activity": activity,
            "shape": (n_layers, n_heads, n_res, n_pairs)}


def sigma_selectivity(act: Activity, cols: np.ndarray) -> dict:
    """(a) sigma_{l,h}[i,j] = sum_t a_t[i] a_t[j] over co-firing x neurons of one head (i < j).

    Per-token increment support: both neurons fire in token t. Only neuron pairs that ever co-fire
    are candidates (and stored). Returns obs (n, C), null (n, C, S), activity, the neuron-pair ids
    and the accumulated sigma values of the stored neuron pairs."""
    n_tokens, n_layers, n_heads, n_neurons = act.x_activity.shape
    n_concepts, n_cols = cols.shape[1], cols.shape[2]
    obs, null, activity, ids, values = [], [], [], [], []
    iu = np.triu_indices(n_neurons, k=1)
    flat_iu = torch.from_numpy(iu[0] * n_neurons + iu[1])
    n1 = cols.sum(0).astype(np.float64)  # C, n_cols
    pos_lists = [[torch.from_numpy(np.nonzero(cols[:, c, j])[0]) for j in range(n_cols)] for c in range(n_concepts)]
    for layer in range(n_layers):
        for h in range(n_heads):
            a = torch.from_numpy(np.ascontiguousarray(act.x_activity[:, layer, h]))
            fired = (a > 0).float()
            total_t = (fired.T @ fired).reshape(-1)[flat_iu]
            keep_t = torch.nonzero(total_t > 0).squeeze(1)
            flat_keep = flat_iu[keep_t]
            total = total_t[keep_t].double().numpy()
            sig = (a.T @ a).reshape(-1)[flat_keep].numpy()
            au = np.empty((keep_t.numel(), n_concepts, n_cols), dtype=np.float32)
            for c in range(n_concepts):
                for j in range(n_cols):
                    fired_pos = fired[pos_lists[c][j]]
                    count_pos = (fired_pos.T @ fired_pos).reshape(-1)[flat_keep].double().numpy()
                    au[:, c, j] = auroc_binary(count_pos, total, n1[c, j], n_tokens)
            keep = keep_t.numpy()
            obs.append(au[:, :, 0])
            null.append(au[:, :, 1:])
            activity.append(total / n_tokens)
            ids.append(np.stack([np.full(keep.size, layer), np.full(keep.size, h), iu[0][keep], iu[1][keep]], 1))
            values.append(sig)
    n_possible = n_layers * n_heads * n_neurons * (n_neurons - 1) // 2
    return {"obs": np.concatenate(obs), "null": np.concatenate(null), "activity": np.concatenate(activity),
            "ids": np.concatenate(ids), "sigma": np.concatenate(values), "n_possible": n_possible}


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
    layer, h, d, k = synapse
    n_tokens = act.x_activity.shape[0]
    pos = torch.arange(n_tokens) % seq_len
    cos, sin = oscillator_cos_sin(torch.as_tensor(freqs), pos)
    pair = torch.from_numpy(act.x_activity[:, layer, h, 2 * k: 2 * k + 2].astype(np.float64))
    q = oscillator_payload(pair, cos[:, 2 * k: 2 * k + 2], sin[:, 2 * k: 2 * k + 2]).numpy()
    x = act.xres[:, layer, d].astype(np.float64)
    w0, w1 = np.zeros(n_tokens), np.zeros(n_tokens)
    acc0 = acc1 = 0.0
    for t in range(n_tokens):
        if t % seq_len == 0:
            acc0 = acc1 = 0.0
        acc0 += x[t] * q[t, 0]
        acc1 += x[t] * q[t, 1]
        w0[t], w1[t] = acc0, acc1
    return np.hypot(w0, w1)


def _variant(act: Activity, cols, concepts, settings, layers, rng) -> tuple[dict, tuple]:
    """Both kinds of synapse of one run, restricted to the analysed layers."""
    act = dataclasses.replace(act, x_activity=act.x_activity[:, layers], xres=act.xres[:, layers])
    inc = increment_selectivity(act, cols)
    sig = sigma_selectivity(act, cols)
    sig_ids = sig["ids"]
    summ_inc = summarize_selectivity(inc, concepts, settings.fdr, settings.top_k,
                                     lambda i: synapse_of(i, inc["shape"], layers), rng)
    summ_sig = summarize_selectivity(sig, concepts, settings.fdr, settings.top_k,
                                     lambda i: [layers[int(sig_ids[i][0])]] + [int(v) for v in sig_ids[i][1:]], rng)
    variant = {
        "increments": {"candidates": int(inc["obs"].shape[0]), "per_concept": summ_inc},
        "sigma": {"stored_pairs": int(sig["obs"].shape[0]), "possible_pairs": int(sig["n_possible"]),
                  "stored_fraction": float(sig["obs"].shape[0] / sig["n_possible"]),
                  "per_concept": summ_sig},
    }
    return variant, (summ_inc, summ_sig)


def run_selectivity(runs: dict, labels, concepts, settings, seq_len: int, rng, log) -> dict:
    """Experiment 1 on every run: selective synapses per concept, and the top-k overlap of runs."""
    offsets = shift_offsets(labels.shape[0], settings.shifts + 1, seq_len, rng)  # first one: the decoy
    cols = label_columns(labels, offsets)
    exp1 = {"shifts": offsets[1:], "decoy_shift": offsets[0], "variants": {}}
    top_sets = {}
    for name, act in runs.items():
        log(f"experiment 1 on the {name} run")
        layers = list(settings.layers) if settings.layers is not None else list(range(act.x_activity.shape[1]))
        exp1["variants"][name], top_sets[name] = _variant(act, cols, concepts, settings, layers, rng)
        exp1["layers"] = layers
    overlaps = {}
    names = list(runs)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            a, b = names[i], names[j]
            overlaps[f"{a}~{b}"] = {"increments": top_overlap(top_sets[a][0], top_sets[b][0], concepts),
                                    "sigma": top_overlap(top_sets[a][1], top_sets[b][1], concepts)}
    exp1["top_k_overlap"] = overlaps
    return exp1


def top_trajectories(exp1: dict, act: Activity, concepts, seq_len: int, freqs) -> dict:
    """The three top x->residual synapses of each concept in the spiking run, token by token."""
    traj = {}
    for c in concepts:
        tops = exp1["variants"]["spiking"]["increments"]["per_concept"][c]["top"][:3]
        traj[c] = [(t["synapse"], weight_trajectory(act, t["synapse"], seq_len, freqs)) for t in tops]
    return traj
