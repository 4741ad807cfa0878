"""``run_study``: the three experiments in order, then figures, results.json and report.md."""

from __future__ import annotations

import dataclasses
import platform
import time
import numpy as np
import torch

from .. import __version__
from ..fileio import atomic_dir
from .activity import dense_activity, spiking_activity
from .biophysical import biophysical_runs, biophysical_status, experiment_parts
from .concepts import StudyInputs, form_counts, load_inputs
from .figures import write_figures
from .increments import increment_panels, top_synapses
from .memory import run_memory
from .rates import raster_spikes, run_rates
from .report import write_results
from .concept_test import legacy_variants, run_concept_test
from .selectivity import top_overlap
from .sigma import read_path_sigma
from .settings import Log, StudySettings
from .verdicts import verdicts


def _model_and_network(settings: StudySettings, log: Log):
    """The dense model and its converted spiking network."""
    from ..checkpoint import load_checkpoint

    model, info = load_checkpoint(settings.checkpoint, n_layer=settings.n_layer, log=log)
    log(f"model: {info['path']} ({info['format']}) config {info['config']}")
    net = _convert(model, settings, settings.max_spikes)
    log(f"converted in {net.provenance['conversion_seconds']:.1f} s")
    return model, info, net


def _convert(model, settings: StudySettings, design_max_spikes: int):
    """The network of the study's settings, thresholds designed for design_max_spikes per step."""
    from ..conversion import convert
    from ..text import shipped_text_path

    calib = None
    if settings.calibration_bytes:
        calib = bytes(np.frombuffer(shipped_text_path("calibration").read_bytes(),
                                    dtype=np.uint8)[: settings.calibration_bytes])
    return convert(model, gating="product", calibration=calib, seed=settings.seed,
                   design_max_spikes=design_max_spikes, progress=True)


def _meta(settings: StudySettings, inputs: StudyInputs, info: dict, net, ids) -> dict:
    model_meta = info.get("meta") or {}
    concepts, labels = inputs.concepts, inputs.labels
    return {
        "bdh_spiking": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "model": {"path": str(info["path"]), "format": info["format"], "config": info["config"],
                  "sha256": info.get("sha256"), "val_loss": model_meta.get("val_loss"),
                  "train_steps": model_meta.get("steps")},
        "network": {"gating": net.gating, "v_init": net.v_init, "calibration": net.calibration.get("text"),
                    "calibration_bytes": net.calibration.get("bytes")},
        "backend": "reference", "text": inputs.text_name, "tokens": int(ids.numel()), "passages": inputs.n_passages,
        "seq_len": inputs.seq_len, "settings": {k: (list(v) if isinstance(v, tuple) else v)
                                                for k, v in dataclasses.asdict(settings).items()},
        "concepts": concepts, "concepts_source": settings.concepts_file if inputs.explicit else "default",
        "concept_occurrences": {c: len(inputs.occurrences[c]) for c in concepts},
        "concept_forms": {c: form_counts(inputs.used, c) for c in concepts},
        "concept_tokens": {c: int(labels[:, i].sum()) for i, c in enumerate(concepts)},
    }


def _biophysical_window(bio_ok: bool, bio_msg: str, model, net, ids, inputs: StudyInputs, w, settings, log, timed):
    """The brian2 window when it can run: (its runs or their error, or None; why it did not run, or None)."""
    if not (bio_ok and settings.bio_tokens > 0):
        return None, {"not_run": bio_msg if not bio_ok else "--bio-tokens 0"}
    timed(f"brian2 biophysical runs ({settings.bio_tokens} bytes x 3 conditions)")
    try:
        # a biophysical neuron fires at most one spike per step at its top rate: its own conversion,
        # thresholds designed for one spike per step (issue 15: with max_spikes > 1 most currents clip)
        if (net.calibration.get("design") or {}).get("max_spikes", 1) > 1:
            from ..semantics import fold_weights

            net = _convert(model, settings, 1)
            w = fold_weights(net, torch.device("cpu"), torch.float64)
            log("biophysical window: network converted with thresholds designed for one spike per step")
        return biophysical_runs(model, net, ids, inputs.labels, inputs.concepts, w, settings, inputs.seq_len, log), None
    except Exception as exc:  # noqa: BLE001  (a backend failure must not sink the study)
        return {"error": f"{type(exc).__name__}: {exc}"}, None


def _experiment1(runs: dict, inputs: StudyInputs, ids, model, freqs, settings: StudySettings, rng, timed) -> dict:
    """The byte-controlled concept test and the read-path sigma on every run; experiment1 keeps the
    layout the figures read (variants, top-k overlap of the sampled S synapses)."""
    enc_v = model.encoder_v.detach().double().numpy()
    flat_ids = ids.reshape(-1).numpy()
    sel = run_concept_test(runs, inputs.labels, flat_ids, inputs.concepts, enc_v, settings, inputs.seq_len, rng, timed)
    layers = sel["layers"]
    timed("sigma on the read path")
    sigma = {name: read_path_sigma(act, flat_ids, enc_v, freqs, inputs.seq_len, layers, rng) for name, act in runs.items()}
    variants = legacy_variants(sel)
    names = list(variants)
    overlaps = {f"{a}~{b}": {k: top_overlap(variants[a][k]["per_concept"], variants[b][k]["per_concept"],
                                            inputs.concepts) for k in ("increments", "sigma")}
                for i, a in enumerate(names) for b in names[i + 1:]}
    return {"selectivity": sel, "sigma": sigma, "variants": variants, "layers": layers, "top_k_overlap": overlaps}


def run_study(settings: StudySettings, log: Log = print) -> dict:
    settings.validate()
    started = time.perf_counter()

    def timed(msg: str) -> None:
        log(f"[{time.perf_counter() - started:.0f} s] {msg}")

    rng = np.random.default_rng(settings.seed)
    torch.manual_seed(settings.seed)
    inputs = load_inputs(settings, log)
    from ..semantics import fold_weights
    from ..text import to_ids

    model, info, net = _model_and_network(settings, log)
    w = fold_weights(net, torch.device("cpu"), torch.float64)
    freqs = np.asarray(net.arrays["freqs"], dtype=np.float32)
    ids = to_ids(np.frombuffer(inputs.used, dtype=np.uint8)).view(inputs.n_passages, inputs.seq_len)
    results = {"meta": _meta(settings, inputs, info, net, ids)}
    bio_ok, bio_msg = biophysical_status()
    log(bio_msg)
    results["meta"]["biophysical"] = {"available": bio_ok, "message": bio_msg}

    timed(f"dense run: {inputs.n_passages} passages x {inputs.seq_len} bytes")
    runs = {"dense": dense_activity(model, ids, w)}
    timed(f"spiking run (reference, multispike, T={settings.timesteps}, K={settings.max_spikes})")
    runs["spiking"] = spiking_activity(net, ids, w, settings)

    exp1 = _experiment1(runs, inputs, ids, model, freqs, settings, rng, timed)
    results["selectivity"], results["sigma"] = exp1.pop("selectivity"), exp1.pop("sigma")
    traj, results["increments_figure"] = increment_panels(runs["spiking"], top_synapses(exp1, inputs.concepts),
                                                          inputs.labels, inputs.concepts, settings.seed)
    results["experiment1"] = exp1
    timed("experiment 2")
    results["experiment2"] = run_memory(net, ids, runs, settings, inputs.seq_len, rng, log)
    bio, not_run = _biophysical_window(bio_ok, bio_msg, model, net, ids, inputs, w, settings, log, timed)
    parts = experiment_parts(bio, not_run)
    results["experiment2"]["biophysical_confirm"] = parts["experiment2"]
    exp1["biophysical"] = parts["experiment1"]

    timed("experiment 3 and figures")
    results["experiment3"], rates = run_rates(runs, settings, inputs.seq_len)
    results["experiment3"]["biophysical"] = parts["experiment3"]
    results["experiment3"]["rates"]["calibration"] = {"text": net.calibration.get("text"),
                                                      "bytes": net.calibration.get("bytes")}
    raster = raster_spikes(runs["spiking"], net, w, settings, inputs.seq_len)
    results["experiment3"]["raster_count_check_max_diff"] = raster.count_check_max_diff
    results["experiment3"]["raster"] = {"sampling": raster.sampling, "neurons": raster.rows, "characters": raster.n_tokens,
                                        "step_ms": raster.step_ms, "token_ms": raster.token_ms,
                                        "sample_active_fraction": raster.sample_active_fraction,
                                        "population_active_fraction": raster.population_active_fraction}
    results["verdicts"] = verdicts(results)
    results["meta"]["wall_s"] = time.perf_counter() - started

    with atomic_dir(settings.out) as out:  # the old report, or the complete new one, never a mix
        results["figures"] = write_figures(out, results, traj, inputs.labels, inputs.concepts, rates, raster, ids,
                                           settings, inputs.seq_len, bio=bio)
        write_results(out, results)
    return results
