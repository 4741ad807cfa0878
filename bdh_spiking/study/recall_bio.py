"""Chosen points of the recall study in the Brian2 biophysical network (slow: minutes per episode).

The recall model is converted with thresholds designed for one spike per step (a biophysical
neuron fires at most one spike per step at its top rate; study/biophysical.py does the same), and
a few fresh episodes of one (K, G) cell run intact at each presentation time (ms per byte) in the
biophysical network, next to the reference executor on the same network and episodes (mode
discrete). Reported per time: accuracy at the answer bytes, the answers' agreement with the
reference executor, mean log-probability of the right answer, wall time. Few episodes: the
accuracies are point estimates with wide binomial intervals (Wilson 95%), not a sweep.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from ..tasks.recall import make_batch
from .recall_probes import answer_logp

BIO_SEED = 20_000_003  # episodes of the biophysical points, disjoint from the study seeds' episodes


def wilson(k: int, n: int) -> list:
    """Wilson 95% interval of a binomial proportion k / n."""
    if n == 0:
        return [float("nan"), float("nan")]
    z, p = 1.959964, k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [centre - half, centre + half]


def biophysical_points(model, settings, log) -> dict:
    """results.json["recall"]["biophysical"]: intact accuracy at each ms per byte, or why not run."""
    from ..backends import simulate
    from .biophysical import biophysical_status
    from .recall import convert_for_recall

    ok, msg = biophysical_status()
    if not ok or not settings.bio_token_ms:
        return {"not_run": msg if not ok else "no ms per byte asked for"}
    K, G = settings.bio_cell
    batch = make_batch(np.random.default_rng([BIO_SEED, K, G]), K, G, settings.bio_episodes)
    ids = torch.from_numpy(batch.ids.astype(np.int64))
    try:
        net = convert_for_recall(model, 0, design_max_spikes=1)
        common = dict(timesteps=settings.timesteps, coding="multispike", max_spikes=settings.max_spikes)
        ref = simulate(net, ids, **common)
        ref_logp, ref_ok = answer_logp(ref.logits, ids, batch.answers)
        out = {"cell": {"K": K, "G": G}, "episodes": settings.bio_episodes, "answers": int(ref_ok.size),
               "reference_accuracy": float(ref_ok.mean()), "reference_accuracy_ci": wilson(int(ref_ok.sum()), ref_ok.size),
               "conversion": "design_max_spikes=1 (one spike per step at the top rate), calibration as the study's",
               "points": {}}
        for token_ms in settings.bio_token_ms:
            t0 = time.perf_counter()
            bio = simulate(net, ids, backend="brian2", mode="biophysical", token_ms=float(token_ms), **common)
            wall = time.perf_counter() - t0
            logp, correct = answer_logp(bio.logits, ids, batch.answers)
            same = bio.logits[:, batch.answers - 1].argmax(-1) == ref.logits[:, batch.answers - 1].argmax(-1)
            out["points"][f"{float(token_ms):g}"] = {
                "accuracy": float(correct.mean()), "accuracy_ci": wilson(int(correct.sum()), correct.size),
                "agreement_with_reference": float(same.float().mean()), "mean_logp_right": float(logp.mean()),
                "wall_s": wall}
            log(f"recall biophysical {token_ms:g} ms per byte: {ids.numel()} bytes in {wall:.0f} s, "
                f"accuracy {correct.mean():.3f}")
        return out
    except Exception as exc:  # noqa: BLE001  (a backend failure must not sink the study)
        return {"error": f"{type(exc).__name__}: {exc}"}
