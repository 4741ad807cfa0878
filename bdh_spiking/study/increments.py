"""The per-token plastic increments of chosen x->residual synapses, the quantity experiment 1
scores (|x_t[d]| * ||a_t(pair k)||, frame-free), next to an activity-matched control synapse:
the data of the increments figure and its summary in results.json."""

from __future__ import annotations

import numpy as np

from .activity import Activity

CONTROL_RULE = ("control: a synapse of the same layer and head as the top synapse, its x pair the one (other than "
                "the top synapses' pairs) whose fraction of tokens with a nonzero increment is closest to the top "
                "pair's, its residual unit drawn at random (numpy default_rng([seed, 31]))")


def increment_series(act: Activity, synapse) -> np.ndarray:
    """|x_t[d]| * ||a_t(pair k)|| of synapse (layer, head, d, k) at every token of the run."""
    layer, h, d, k = synapse
    pair = act.x_activity[:, layer, h, 2 * k: 2 * k + 2].astype(np.float64)
    return np.abs(act.xres[:, layer, d].astype(np.float64)) * np.hypot(pair[:, 0], pair[:, 1])


def control_synapse(act: Activity, synapse, exclude_pairs, rng: np.random.Generator) -> list:
    """CONTROL_RULE for one top synapse."""
    layer, h, _, k = synapse
    a = act.x_activity[:, layer, h]
    activity = (np.hypot(a[:, 0::2], a[:, 1::2]) > 0).mean(0)  # per pair
    gap = np.abs(activity - activity[k])
    gap[list(exclude_pairs)] = np.inf
    return [int(layer), int(h), int(rng.integers(0, act.xres.shape[2])), int(np.argmin(gap))]


def top_synapses(exp1: dict, concepts, run: str = "spiking", n: int = 3) -> dict:
    """The first n top x->residual synapses per concept of experiment 1 (empty where none)."""
    per = exp1.get("variants", {}).get(run, {}).get("increments", {}).get("per_concept", {})
    return {c: [t["synapse"] for t in per.get(c, {}).get("top", [])[:n]] for c in concepts}


def _means(series: np.ndarray, lab: np.ndarray) -> dict:
    return {"mean_in_concept": float(series[lab].mean()) if lab.any() else float("nan"),
            "mean_outside": float(series[~lab].mean()) if (~lab).any() else float("nan")}


def increment_panels(act: Activity, tops: dict, labels: np.ndarray, concepts, seed: int) -> tuple[dict, dict]:
    """(per concept: the top synapses' and the control's increment series, for the figure;
    per concept: which synapses, and their mean increment inside and outside the concept)."""
    rng = np.random.default_rng([seed, 31])
    panels, summary = {}, {"rule": CONTROL_RULE, "quantity": "|x_t[d]| * ||a_t(pair k)|| per token (spiking run)",
                           "concepts": {}}
    for c, syns in tops.items():
        if not syns:
            continue
        lab = labels[:, concepts.index(c)].astype(bool)
        ctrl = control_synapse(act, syns[0], {s[3] for s in syns if s[:2] == syns[0][:2]}, rng)
        top = [(s, increment_series(act, s)) for s in syns]
        panels[c] = {"top": top, "control": (ctrl, increment_series(act, ctrl))}
        summary["concepts"][c] = {"top": [{"synapse": s, **_means(y, lab)} for s, y in top],
                                  "control": {"synapse": ctrl, **_means(panels[c]["control"][1], lab)}}
    return panels, summary
