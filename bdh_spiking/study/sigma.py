"""The neuron-to-neuron state the plastic synapses imply on the read path, and how much of the y drive
it explains (docs/study.md, "sigma on the read path").

Per layer and head, with S_t = sum_{s<t} x_s q_s^T (D x N, fixed frame) the executed state:

    z_t = LN(S_t q_t) E_v                       (the y neurons' drive, product gating)
        = sigma_t q_t / sqrt(var_d(S_t q_t) + eps),   sigma_t = E_v^T S_t = sum_{s<t} v_s q_s^T (N x N)

exactly, because every x_s leaves a LayerNorm (mean over d is 0), so S_t q_t has mean 0 and the
LayerNorm only rescales it. sigma_t[j, i] is directed (x neuron i, read by its current payload
q_t[i], drives y neuron j) and value-bearing (v_s = E_v^T x_s). The quantities compared:

* the identity itself is checked on the last token of every passage (``identity_max_rel_error``);
* ``phase_free``: sigma_ff,t = sum_{s<t} v_s a_s^T read by a_t (the rotations dropped): a graph of
  neuron-to-neuron weights without oscillator phases;
* ``value_shuffled``: the values x_s taken from another passage at the same positions (keys, their
  phases and their Gram matrix kept; with one passage, from a permutation of its positions): the
  key covariance without the stored content;
* ``byte_mean``: the leave-one-out mean of z over the other tokens with the same current byte.
"""

from __future__ import annotations

import numpy as np
import torch

from ..semantics import layer_norm, oscillator_cos_sin, oscillator_payload

EPS = 1e-5  # torch's LayerNorm eps (the model's)


def _sums(z: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """[SSE, SST, cross, SSP] over tokens and neurons; SST, cross and SSP around each neuron's mean
    over the tokens (cross / sqrt(SST SSP) is the pooled correlation)."""
    zc, pc = z - z.mean(0), pred - pred.mean(0)
    return np.array([((z - pred) ** 2).sum(), (zc ** 2).sum(), (zc * pc).sum(), (pc ** 2).sum()])


def _explained(v: np.ndarray) -> dict:
    """r2: 1 - SSE/SST of the prediction as it is; r2_fit: the squared pooled correlation, the variance
    a least-squares rescaling of the prediction explains (per-neuron offsets free)."""
    sse, sst, cross, ssp = v
    corr = cross / np.sqrt(sst * ssp) if sst > 0 and ssp > 0 else float("nan")
    return {"r2": float(1.0 - sse / sst), "r2_fit": float(corr ** 2), "corr": float(corr)}


def _byte_loo(z: np.ndarray, byte: np.ndarray) -> np.ndarray:
    """Leave-one-out mean of z over the other tokens with the same byte (the global mean for a byte seen once)."""
    codes, inv, counts = np.unique(byte, return_inverse=True, return_counts=True)
    sums = np.zeros((codes.size, z.shape[1]))
    np.add.at(sums, inv, z)
    n = counts[inv][:, None]
    return np.where(n > 1, (sums[inv] - z) / np.maximum(n - 1, 1), z.mean(0))


def _other_values(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """The values of the next passage (cyclically), or of a permutation of the positions with one passage."""
    if x.shape[0] > 1:
        return torch.roll(x, 1, dims=0)
    return x[:, torch.from_numpy(rng.permutation(x.shape[1]))]


def _head_drives(q, a, x, x_other, ev) -> dict:
    """y drive and its predictions for one head: q, a (P, T, N); x, x_other (P, T, D); ev (D, N)."""
    causal = torch.ones(q.shape[1], q.shape[1], dtype=q.dtype).tril(diagonal=-1)
    u = ((q @ q.mT) * causal) @ x
    u_ff = ((a @ a.mT) * causal) @ x
    u_sh = ((q @ q.mT) * causal) @ x_other
    out = {"z": layer_norm(u) @ ev, "phase_free": layer_norm(u_ff) @ ev, "value_shuffled": layer_norm(u_sh) @ ev}
    # the identity, token by token on the last token of each passage: sigma_t q_t / sqrt(var + eps)
    t = q.shape[1] - 1
    sigma_t = torch.einsum("dn,psd,psm->pnm", ev, x[:, :t], q[:, :t])  # E_v^T S_t: (P, N, N)
    direct = torch.einsum("pnm,pm->pn", sigma_t, q[:, t]) / torch.sqrt(u[:, t].var(-1, unbiased=False) + EPS)[:, None]
    out["identity_error"] = float((direct - out["z"][:, t]).abs().max() / out["z"][:, t].abs().max().clamp(min=1e-30))
    return out


def read_path_sigma(act, ids: np.ndarray, enc_v: np.ndarray, freqs: np.ndarray, seq_len: int, layers: list,
                    rng: np.random.Generator) -> dict:
    """Variance of the y drive explained by each predictor, per layer (pooled over heads) and overall.
    The first token of every passage (empty state, z = 0) is left out."""
    n_tokens = act.x_activity.shape[0]
    n_pass = n_tokens // seq_len
    cos, sin = oscillator_cos_sin(torch.as_tensor(freqs), torch.arange(seq_len))
    byte = np.asarray(ids).reshape(n_pass, seq_len)[:, 1:].reshape(-1)
    keys = ("phase_free", "value_shuffled", "byte_mean")
    totals = {k: np.zeros(4) for k in keys}
    per_layer, identity = {}, 0.0
    for layer in layers:
        x = torch.from_numpy(act.xres[:, layer].astype(np.float64)).view(n_pass, seq_len, -1)
        x_other = _other_values(x, rng)
        acc = {k: np.zeros(4) for k in keys}
        for h in range(enc_v.shape[0]):
            a = torch.from_numpy(act.x_activity[:, layer, h].astype(np.float64)).view(n_pass, seq_len, -1)
            q = oscillator_payload(a, cos.double(), sin.double())
            d = _head_drives(q, a, x, x_other, torch.from_numpy(enc_v[h].astype(np.float64)))
            identity = max(identity, d["identity_error"])
            z = d["z"][:, 1:].reshape(-1, d["z"].shape[-1]).numpy()
            preds = {"byte_mean": _byte_loo(z, byte)}
            for k in ("phase_free", "value_shuffled"):
                preds[k] = d[k][:, 1:].reshape(z.shape).numpy()
            for k, pred in preds.items():
                acc[k] += _sums(z, pred)
        per_layer[str(layer)] = {k: _explained(v) for k, v in acc.items()}
        for k in keys:
            totals[k] += acc[k]
    return {"explained": {k: _explained(v) for k, v in totals.items()}, "per_layer": per_layer,
            "identity_max_rel_error": identity, "tokens": int(byte.size)}
