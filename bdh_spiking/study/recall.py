"""The associative-recall study: is the answer in the plastic synapses, and for how long?

Per seed: the recall model is converted (calibration on seed-derived episodes) and run on fresh
episodes (bdh_spiking.tasks.recall) of each (K, G) cell under four conditions, all on the same
episodes (paired):

    intact               the network as converted
    reset_before_query   the queries alone, from a zero plastic state (the rule is translation
                         invariant, so this is resetting S at the first query; see docs/study.md)
    frozen_after_study   writes stop at the first filler byte (Plasticity freeze_after = 2K):
                         the study phase is stored, the filler and the queries are not
    scrambled_context    another episode's study phase and filler, then this episode's queries:
                         the pathway is alive, the stored content is wrong

and a decay sweep (Plasticity decay_tau_tokens). Accuracy is the argmax at the answer bytes only.
On the probe cells (probe_pairs x probe_gaps), study/recall_probes.py adds the decay sweep under
synaptic noise and the lesion; study/recall_bio.py runs chosen points in the Brian2 biophysical network.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..tasks.recall import chance_accuracy, make_batch
from .recall_probes import lesion_cell, lesion_stats, noise_cell, noise_stats, tau50, tau_ci

CONDITIONS = ("intact", "reset_before_query", "frozen_after_study", "scrambled_context")
CALIBRATION_SEED = 10_000_019  # episodes for the conversion's thresholds, disjoint from every study seed
LAG_EDGES = (0, 8, 16, 32, 64, 128, 1024)


@dataclasses.dataclass
class RecallStudySettings:
    out: str
    checkpoint: str | None = None
    seeds: tuple = (0, 1, 2)
    pairs: tuple = (4, 8, 16)
    gaps: tuple = (0, 8, 16, 32, 64)
    episodes: int = 64  # per (seed, K, G) cell
    taus: tuple = (1, 2, 4, 8, 16, 32, 64, 128)
    timesteps: int = 8
    max_spikes: int = 4
    n_boot: int = 1000
    rates_cps: tuple = (5.0, 10.0, 20.0)
    noise_levels: tuple = (0.0, 1.0, 4.0)  # sigma, relative to one token's increment (recall_probes.py)
    noise_taus: tuple = (2, 8, 32, 128)  # the decay sweep under noise (and no decay)
    probe_pairs: tuple = (8,)  # the (K, G) cells that get the noise sweep and the lesion
    probe_gaps: tuple = (0, 16, 64)
    probe_episodes: int = 32  # the first episodes of each probe cell (stepwise runs: slower)
    lesion: bool = True
    bio_token_ms: tuple = (50.0, 100.0, 200.0)  # brian2 biophysical points; empty: not run
    bio_episodes: int = 1
    bio_cell: tuple = (8, 16)  # (K, G) of the biophysical episodes
    quick: bool = False

    def validate(self) -> "RecallStudySettings":
        if not self.seeds or not self.pairs or not self.gaps:
            raise ConfigError("the recall study needs at least one seed, one K and one G")
        if self.episodes < 2:
            raise ConfigError(f"the recall study needs >= 2 episodes per cell for a bootstrap, got {self.episodes}")
        if any(t <= 0 for t in self.taus) or any(t <= 0 for t in self.noise_taus):
            raise ConfigError(f"decay time constants must be > 0 tokens, got {self.taus} / {self.noise_taus}")
        if any(not 0 <= s < math.inf for s in self.noise_levels):
            raise ConfigError(f"synaptic noise levels must be finite and >= 0, got {self.noise_levels}")
        if self.probe_episodes < 2 or self.bio_episodes < 1 or any(not t > 0 for t in self.bio_token_ms):
            raise ConfigError("probe episodes must be >= 2, biophysical episodes >= 1 and ms per byte > 0")
        return self

    def probed(self, K: int, G: int) -> bool:
        """Does cell (K, G) get the noise sweep and the lesion?"""
        return K in self.probe_pairs and G in self.probe_gaps


def condition_inputs(batch) -> dict:
    """Condition -> (ids (n, L) int64, plasticity, positions of the answer bytes in those ids)."""
    ids = torch.from_numpy(batch.ids.astype(np.int64))
    q0, ans = batch.query_start, batch.answers
    other = torch.roll(ids, 1, dims=0)  # episode i gets episode i-1's study phase and filler
    return {
        "intact": (ids, None, ans),
        "reset_before_query": (ids[:, q0:], None, ans - q0),
        "frozen_after_study": (ids, {"freeze_after": batch.study_end}, ans),
        "scrambled_context": (torch.cat([other[:, :q0], ids[:, q0:]], 1), None, ans),
    }


def answer_scores(logits: torch.Tensor, ids: torch.Tensor, answers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(correct (n, K) bool, cross-entropy (n, K) nats) at the answer bytes: logits at p - 1 predict p."""
    pos = torch.as_tensor(answers - 1)
    lp = F.log_softmax(logits[:, pos].double(), -1)
    target = ids[:, pos + 1]
    ce = -lp.gather(-1, target[..., None]).squeeze(-1)
    return (lp.argmax(-1) == target).numpy(), ce.numpy()


def run_cell(net, batch, settings: RecallStudySettings, seed: int = 0) -> dict:
    """Per-episode scores of one (seed, K, G) cell: condition -> (correct, ce), decay tau -> correct;
    on probe cells also the noise sweep and the lesion (recall_probes.py)."""
    from ..backends import simulate

    def run(ids, plast, ans):
        res = simulate(net, ids, timesteps=settings.timesteps, coding="multispike",
                       max_spikes=settings.max_spikes, plasticity=plast)
        return answer_scores(res.logits, ids, ans)

    out = {c: run(*v) for c, v in condition_inputs(batch).items()}
    ids = torch.from_numpy(batch.ids.astype(np.int64))
    decay = {float(t): run(ids, {"decay_tau_tokens": float(t)}, batch.answers)[0] for t in settings.taus}
    probe = settings.probed(batch.K, batch.G)
    return {"conditions": out, "decay": decay, "noise": noise_cell(net, batch, settings, seed) if probe else None,
            "lesion": lesion_cell(net, batch, settings, seed) if probe and settings.lesion else None}


def convert_for_recall(model, seed: int, design_max_spikes: int = 4):
    """The default conversion (product gating, multispike design), thresholds from recall episodes."""
    from ..conversion import convert

    calib = np.concatenate([make_batch(CALIBRATION_SEED + seed, K, G, 8).ids.reshape(-1)
                            for K in (4, 8, 16) for G in (0, 16, 64)])
    return convert(model, gating="product", calibration=torch.from_numpy(calib.astype(np.int64)), seed=seed,
                   design_max_spikes=design_max_spikes)


def collect(model, settings: RecallStudySettings, log) -> list:
    """One record per (seed, K, G) cell: its batch and its per-episode scores."""
    cells = []
    for seed in settings.seeds:
        started = time.perf_counter()
        net = convert_for_recall(model, seed)
        for K in settings.pairs:
            for G in settings.gaps:
                batch = make_batch(np.random.default_rng([seed, K, G]), K, G, settings.episodes)
                cells.append({"seed": seed, "K": K, "G": G, "batch": batch, **run_cell(net, batch, settings, seed)})
        log(f"seed {seed}: {len(settings.pairs) * len(settings.gaps)} cells in {time.perf_counter() - started:.0f} s")
    return cells


def _stat(cells: list, value, idx=None) -> float:
    """Mean over cells of the per-cell mean over episodes of value(cell) (n, K); idx resamples episodes."""
    return float(np.mean([value(c)[idx[i] if idx is not None else slice(None)].mean() for i, c in enumerate(cells)]))


def bootstrap(cells: list, values: dict, settings: RecallStudySettings, rng) -> dict:
    """Point estimates and paired percentile 95% intervals of each statistic in ``values``.

    Episodes are resampled with replacement within each (seed, K, G) cell, the same resample for
    every statistic (paired: conditions, taus and differences share it)."""
    point = {k: _stat(cells, f) for k, f in values.items()}
    boots = {k: [] for k in values}
    for _ in range(settings.n_boot):
        idx = [rng.integers(0, c["batch"].ids.shape[0], c["batch"].ids.shape[0]) for c in cells]
        for k, f in values.items():
            boots[k].append(_stat(cells, f, idx))
    ci = {k: [float(np.percentile(b, 2.5)), float(np.percentile(b, 97.5))] for k, b in boots.items()}
    return {"point": point, "ci": ci, "boots": {k: np.asarray(b) for k, b in boots.items()}}


def _cell_index(cells: list, n_boot: int, rng) -> list:
    """Per cell a (n_boot, n) matrix of episode indices: one resample shared by every statistic."""
    return [rng.integers(0, c["batch"].ids.shape[0], (n_boot, c["batch"].ids.shape[0])) for c in cells]


def cell_mean(cells: list, idx: list, per_episode) -> tuple[float, np.ndarray]:
    """Mean over cells of the cell's mean over episodes of per_episode(cell) (n,): point, bootstrap."""
    arrs = [np.asarray(per_episode(c), dtype=np.float64) for c in cells]
    point = float(np.mean([a.mean() for a in arrs]))
    return point, np.mean([a[i].mean(1) for a, i in zip(arrs, idx)], axis=0)


def pooled_ratio(cells: list, idx: list, num, den) -> tuple[float, np.ndarray]:
    """sum num / sum den over all episodes of all cells (for answers pooled by lag)."""
    nums = [np.asarray(num(c), dtype=np.float64) for c in cells]
    dens = [np.asarray(den(c), dtype=np.float64) for c in cells]
    total = sum(d.sum() for d in dens)
    point = float(sum(n.sum() for n in nums) / total) if total else float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = sum(n[i].sum(1) for n, i in zip(nums, idx)) / sum(d[i].sum(1) for d, i in zip(dens, idx))
    return point, boot


def _ci(boot: np.ndarray) -> list:
    boot = np.asarray(boot, dtype=np.float64)
    return [float(np.nanpercentile(boot, 2.5)), float(np.nanpercentile(boot, 97.5))]


def condition_stats(cells: list, idx: list) -> dict:
    """Accuracy and answer loss per condition, and paired differences intact - condition."""
    acc = {c: cell_mean(cells, idx, lambda cell, c=c: cell["conditions"][c][0].mean(1)) for c in CONDITIONS}
    loss = {c: cell_mean(cells, idx, lambda cell, c=c: cell["conditions"][c][1].mean(1)) for c in CONDITIONS}
    diff = {c: (acc["intact"][0] - acc[c][0], acc["intact"][1] - acc[c][1]) for c in CONDITIONS[1:]}
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = (float(np.float64(acc["frozen_after_study"][0]) / acc["intact"][0]),
                 acc["frozen_after_study"][1] / acc["intact"][1])
    return {
        "accuracy": {c: v[0] for c, v in acc.items()}, "accuracy_ci": {c: _ci(v[1]) for c, v in acc.items()},
        "loss_nats": {c: v[0] for c, v in loss.items()}, "loss_ci": {c: _ci(v[1]) for c, v in loss.items()},
        "intact_minus": {c: v[0] for c, v in diff.items()}, "intact_minus_ci": {c: _ci(v[1]) for c, v in diff.items()},
        "frozen_over_intact": ratio[0], "frozen_over_intact_ci": _ci(ratio[1]),
    }


def lag_stats(cells: list, idx: list) -> list:
    """Accuracy and answer loss against lag (tokens from a value's study position to its answer)."""
    rows = []
    for lo, hi in zip(LAG_EDGES[:-1], LAG_EDGES[1:]):
        def mask(c, lo=lo, hi=hi):
            return (c["batch"].lags >= lo) & (c["batch"].lags < hi)
        if not any(mask(c).any() for c in cells):
            continue
        row = {"lag_lo": lo, "lag_hi": hi, "answers": int(sum(mask(c).sum() for c in cells))}
        for cond in ("intact", "frozen_after_study"):
            a = pooled_ratio(cells, idx, lambda c, m=mask, k=cond: (c["conditions"][k][0] * m(c)).sum(1),
                             lambda c, m=mask: m(c).sum(1))
            loss = pooled_ratio(cells, idx, lambda c, m=mask, k=cond: (c["conditions"][k][1] * m(c)).sum(1),
                                lambda c, m=mask: m(c).sum(1))
            row[cond] = {"accuracy": a[0], "accuracy_ci": _ci(a[1]), "loss_nats": loss[0], "loss_ci": _ci(loss[1])}
        rows.append(row)
    return rows


def decay_stats(cells: list, idx: list, settings: RecallStudySettings, chance: float) -> dict:
    """Accuracy against decay tau, and tau50 (with a paired bootstrap interval) per gap and overall."""
    taus = np.asarray(sorted(float(t) for t in settings.taus))

    def one(subset: list, sub_idx: list) -> dict:
        intact = cell_mean(subset, sub_idx, lambda c: c["conditions"]["intact"][0].mean(1))
        accs = [cell_mean(subset, sub_idx, lambda c, t=t: c["decay"][t].mean(1)) for t in taus]
        point = tau50(taus, np.array([a[0] for a in accs]), intact[0], chance)
        boot = np.array([tau50(taus, np.array([a[1][b] for a in accs]), intact[1][b], chance)
                         for b in range(len(intact[1]))])
        ci = tau_ci(boot)
        return {"tokens": point, "ci": ci, "censored": "<= smallest tau" if point == taus[0] else
                ("> largest tau" if math.isinf(point) else None),
                "ms": {f"{r:g}_chars_per_s": point * 1000.0 / r for r in settings.rates_cps},
                "accuracy_vs_tau": {f"{t:g}": a[0] for t, a in zip(taus, accs)},
                "accuracy_vs_tau_ci": {f"{t:g}": _ci(a[1]) for t, a in zip(taus, accs)}}

    by_gap = {}
    for G in settings.gaps:
        pick = [i for i, c in enumerate(cells) if c["G"] == G]
        by_gap[str(G)] = one([cells[i] for i in pick], [idx[i] for i in pick])
    return {"overall": one(cells, idx), "by_gap": by_gap, "taus": [float(t) for t in taus]}


def summarize(cells: list, settings: RecallStudySettings, rng) -> dict:
    """results.json["recall"]: every number of the study with its paired bootstrap interval."""
    chance = chance_accuracy()
    idx = _cell_index(cells, settings.n_boot, rng)
    cond = condition_stats(cells, idx)
    decay = decay_stats(cells, idx, settings, chance)
    per_cell = [{"seed": c["seed"], "K": c["K"], "G": c["G"], "episodes": int(c["batch"].ids.shape[0]),
                 **{k: float(c["conditions"][k][0].mean()) for k in CONDITIONS}} for c in cells]
    per_seed = {str(s): {k: float(np.mean([r[k] for r in per_cell if r["seed"] == s])) for k in CONDITIONS}
                for s in settings.seeds}
    acc = cond["accuracy"]
    checks = {"intact_ge_0.9": acc["intact"] >= 0.9,
              "reset_le_chance_plus_0.05": acc["reset_before_query"] <= chance + 0.05,
              "frozen_ge_0.95_intact": acc["frozen_after_study"] >= 0.95 * acc["intact"]}
    return {
        "chance": chance, **cond, "checks": checks,
        "tau50_tokens": {"value": decay["overall"]["tokens"], "ci": decay["overall"]["ci"],
                         "censored": decay["overall"]["censored"], "ms": decay["overall"]["ms"],
                         "by_gap": {g: {k: v[k] for k in ("tokens", "ci", "censored", "ms")}
                                    for g, v in decay["by_gap"].items()},
                         "noise_levels": noise_stats(cells, settings, chance, rng)},
        "decay": decay, "accuracy_vs_lag": lag_stats(cells, idx),
        "per_cell": per_cell, "per_seed": per_seed,
        "lesion": lesion_stats(cells, settings.n_boot, rng), "biophysical": None,
        "grid": {"seeds": list(settings.seeds), "K": list(settings.pairs), "G": list(settings.gaps),
                 "episodes_per_cell": settings.episodes, "n_boot": settings.n_boot},
        "executor": f"reference (discrete), multispike, T={settings.timesteps}, max_spikes={settings.max_spikes}",
    }
