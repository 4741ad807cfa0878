"""Experiment 1, synapses that carry concepts: helpers on the executed x-neuron -> residual synapses
(frame-free increments, their passage-scale scores, weight trajectories). The test itself, with a
null that controls the byte, is ``concept_test``."""

from __future__ import annotations

import numpy as np
import torch

from ..semantics import oscillator_cos_sin, oscillator_payload
from .activity import Activity


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


def top_trajectories(exp1: dict, act: Activity, concepts, seq_len: int, freqs) -> dict:
    """The three top x->residual synapses of each concept in the spiking run, token by token."""
    traj = {}
    for c in concepts:
        tops = exp1["variants"]["spiking"]["increments"]["per_concept"][c]["top"][:3]
        traj[c] = [(t["synapse"], weight_trajectory(act, t["synapse"], seq_len, freqs)) for t in tops]
    return traj
