"""``run_recall_study`` (bdh-study --task recall): convert, measure, write results.json and report.md."""

from __future__ import annotations

import json
import platform
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from .recall import CONDITIONS, RecallStudySettings, collect, summarize
from .recall_bio import biophysical_points
from .report import _jsonable


def recall_model_path() -> Path:
    """The shipped recall model (bdh_spiking/data/recall_model.pt, RECALL_MODEL_CARD.md)."""
    return Path(str(resources.files("bdh_spiking") / "data" / "recall_model.pt"))


def _f(v, nd=3) -> str:
    return "nan" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{nd}f}"


def _ci(ci) -> str:
    return f"[{_f(ci[0])}, {_f(ci[1])}]"


def _conditions(r: dict) -> list[str]:
    lines = ["| condition | accuracy | 95% CI | intact minus it (paired 95% CI) | answer loss (nats) | 95% CI |",
             "|---|---|---|---|---|---|"]
    for c in CONDITIONS:
        diff = "" if c == "intact" else f"{_f(r['intact_minus'][c])} {_ci(r['intact_minus_ci'][c])}"
        lines.append(f"| {c} | {_f(r['accuracy'][c])} | {_ci(r['accuracy_ci'][c])} | {diff} | "
                     f"{_f(r['loss_nats'][c])} | {_ci(r['loss_ci'][c])} |")
    ratio = f"{_f(r['frozen_over_intact'])} {_ci(r['frozen_over_intact_ci'])}"
    return lines + ["", f"Chance (uniform digit): {_f(r['chance'])}. Frozen-after-study / intact: {ratio}. "
                        f"Checks: {', '.join(f'{k}: {v}' for k, v in r['checks'].items())}.", ""]


def _cells(r: dict) -> list[str]:
    lines = ["| seed | K | G | episodes | " + " | ".join(CONDITIONS) + " |", "|---" * (4 + len(CONDITIONS)) + "|"]
    for c in r["per_cell"]:
        lines.append(f"| {c['seed']} | {c['K']} | {c['G']} | {c['episodes']} | "
                     + " | ".join(_f(c[k]) for k in CONDITIONS) + " |")
    return lines + [""]


def _lag(r: dict) -> list[str]:
    lines = ["| lag (tokens) | answers | intact accuracy [CI] | intact loss [CI] | frozen accuracy [CI] |",
             "|---|---|---|---|---|"]
    for row in r["accuracy_vs_lag"]:
        i, f = row["intact"], row["frozen_after_study"]
        lines.append(f"| {row['lag_lo']}-{row['lag_hi'] - 1} | {row['answers']} | {_f(i['accuracy'])} "
                     f"{_ci(i['accuracy_ci'])} | {_f(i['loss_nats'])} {_ci(i['loss_ci'])} | "
                     f"{_f(f['accuracy'])} {_ci(f['accuracy_ci'])} |")
    return lines + [""]


def _decay(r: dict) -> list[str]:
    t = r["tau50_tokens"]
    taus = r["decay"]["taus"]
    lines = [f"tau50 (tokens, decay of S by exp(-1/tau) per token, no synaptic noise): {_f(t['value'], 2)} "
             f"{_ci(t['ci'])}" + (f" (censored: {t['censored']})" if t["censored"] else ""), "",
             "| G | tau50 tokens [CI] | ms at 5 / 10 / 20 chars/s | " + " | ".join(f"acc tau={x:g}" for x in taus) + " |",
             "|---" * (3 + len(taus)) + "|"]
    for g, v in r["decay"]["by_gap"].items():
        ms = " / ".join(_f(m, 0) for m in v["ms"].values())
        lines.append(f"| {g} | {_f(v['tokens'], 2)} {_ci(v['ci'])}{' (' + v['censored'] + ')' if v['censored'] else ''}"
                     f" | {ms} | " + " | ".join(_f(a) for a in v["accuracy_vs_tau"].values()) + " |")
    return lines + [""] + _noise(t["noise_levels"])


def _noise(nz: dict) -> list[str]:
    if "levels" not in nz:
        return [f"Synaptic noise: {nz.get('not_run')}", ""]
    taus = nz["taus"]
    lines = [f"Synaptic noise ({nz['definition']}); cells {nz['cells']}, first {nz['episodes_per_cell']} episodes "
             "of each. tau50: halfway from chance to the noiseless intact accuracy of the same episodes.", "",
             "| sigma | G | no-decay accuracy [CI] | tau50 tokens [CI] | ms at 5 / 10 / 20 chars/s | "
             + " | ".join(f"acc tau={x:g}" for x in taus) + " |", "|---" * (5 + len(taus)) + "|"]
    for sigma, lv in nz["levels"].items():
        for g, v in [("all", lv["overall"])] + list(lv["by_gap"].items()):
            if v.get("tau50_tokens") is None:
                lines.append(f"| {sigma} | {g} | {_f(v['no_decay_accuracy'])} {_ci(v['no_decay_accuracy_ci'])} | "
                             "(the main sweep above) | | " + " | ".join("" for _ in taus) + " |")
                continue
            ms = " / ".join(_f(m, 0) for m in v["tau50_ms"].values())
            cens = f" ({v['censored']})" if v["censored"] else ""
            lines.append(f"| {sigma} | {g} | {_f(v['no_decay_accuracy'])} {_ci(v['no_decay_accuracy_ci'])} | "
                         f"{_f(v['tau50_tokens'], 2)} {_ci(v['tau50_ci'])}{cens} | {ms} | "
                         + " | ".join(_f(a) for a in v["accuracy_vs_tau"].values()) + " |")
    return lines + [""]


def _lesion(r: dict) -> list[str]:
    les = r["lesion"]
    if "not_run" in les:
        return [f"Lesion: {les['not_run']}", ""]
    rows = [("answer log-prob drop, top-10 lesion", "drop_logp_top"),
            ("answer log-prob drop, 10 matched random", "drop_logp_random"),
            ("top minus random (paired)", "top_minus_random_drop_logp"),
            ("accuracy intact", "accuracy_intact"), ("accuracy, top-10 lesioned", "accuracy_top"),
            ("accuracy, random lesioned", "accuracy_random"),
            ("mean activity of the top synapses", "activity_top"),
            ("mean activity of the random synapses", "activity_random")]
    lines = [f"{les['pairs_lesioned']} pairs (one per episode) in cells {les['cells']}. {les['definition']}", "",
             "| quantity | value | 95% CI |", "|---|---|---|"]
    lines += [f"| {name} | {_f(les[k], 4)} | [{_f(les[k + '_ci'][0], 4)}, {_f(les[k + '_ci'][1], 4)}] |"
              for name, k in rows]
    return lines + ["", f"Verdict: {les['verdict']}.", ""]


def _bio(r: dict) -> list[str]:
    b = r["biophysical"]
    if not b or "points" not in b:
        return [f"Biophysical points: {b}", ""]
    lines = [f"Cell K={b['cell']['K']}, G={b['cell']['G']}, {b['episodes']} episodes ({b['answers']} answers); "
             f"conversion {b['conversion']}. Reference executor (discrete) on the same network and episodes: "
             f"accuracy {_f(b['reference_accuracy'])} {_ci(b['reference_accuracy_ci'])}.", "",
             "| ms per byte | accuracy [Wilson 95%] | answers equal to the reference | mean log p(right) | wall s |",
             "|---|---|---|---|---|"]
    for ms, p in b["points"].items():
        lines.append(f"| {ms} | {_f(p['accuracy'])} {_ci(p['accuracy_ci'])} | {_f(p['agreement_with_reference'])} | "
                     f"{_f(p['mean_logp_right'])} | {p['wall_s']:.0f} |")
    return lines + [""]


def render_recall(res: dict) -> str:
    r, m = res["recall"], res["meta"]
    head = ["# Associative recall in the spiking BDH", "",
            f"Model: `{m['model']['path']}` (sha256 {str(m['model']['sha256'])[:12]}, config {m['model']['config']}). "
            f"Executor: {r['executor']}. Seeds {r['grid']['seeds']}, K {r['grid']['K']}, G {r['grid']['G']}, "
            f"{r['grid']['episodes_per_cell']} fresh episodes per (seed, K, G), {r['grid']['n_boot']} paired "
            f"bootstrap resamples (episodes within cells; docs/study.md). Wall time {m['wall_s']:.0f} s "
            f"on {m['host']}.", "",
            "Every number below is read from results.json of this run. Accuracy: argmax at the answer bytes "
            "only; each condition's number is the mean over seeds and (K, G) cells.", "",
            "## Conditions", ""]
    tail = ["## Lesion: the pair's top-10 synapses against 10 activity-matched random ones", ""] + _lesion(r) + [
        "## Brian2 biophysical network (chosen points)", ""] + _bio(r)
    return "\n".join(head + _conditions(r) + ["## Per cell", ""] + _cells(r) + ["## Accuracy against lag", ""]
                     + _lag(r) + ["## Decay and tau50", ""] + _decay(r) + tail) + "\n"


def run_recall_study(settings: RecallStudySettings, log=print) -> dict:
    """The whole recall study; writes settings.out/results.json and report.md; returns the results."""
    from ..checkpoint import load_checkpoint
    from ..fileio import atomic_write_text

    settings.validate()
    started = time.perf_counter()
    torch.manual_seed(0)
    model, info = load_checkpoint(settings.checkpoint or recall_model_path(), log=log)
    model.eval()
    cells = collect(model, settings, log)
    recall = summarize(cells, settings, np.random.default_rng(list(settings.seeds)))
    recall["biophysical"] = biophysical_points(model, settings, log)
    meta = {"bdh_spiking": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "host": platform.node(), "task": "recall",
            "model": {"path": str(info["path"]), "sha256": info.get("sha256"), "config": info["config"],
                      "train_steps": (info.get("meta") or {}).get("steps")},
            "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(settings).items()},
            "wall_s": time.perf_counter() - started}
    results = {"meta": meta, "recall": recall}
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(_jsonable(results), indent=1, allow_nan=True))
    atomic_write_text(out / "report.md", render_recall(results))
    return results
