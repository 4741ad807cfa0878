"""Passes from a dense BDH model to the spiking network IR (calibration, threshold balancing).

Knows no simulator: it produces a ``SpikingNetwork`` that every backend lowers.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np
import torch

from .. import __version__
from ..errors import ConfigError
from ..network import GATINGS, SpikingNetwork
from ..text import read_bytes, shipped_text_path, to_ids
from .calibration import collect_stats, thresholds

GRANULARITIES = ("neuron", "head", "population")
STATISTICS = ("max", "quantile", "mse")


def _calibration_ids(calibration) -> tuple[torch.Tensor, str]:
    """bytes/str/array/tensor (the text) or Path (a file) or None -> (ids, a name for the report)."""
    if calibration is None:
        path = shipped_text_path("calibration")
        return to_ids(read_bytes(path, what="calibration text")), f"shipped:{path.name}"
    if isinstance(calibration, torch.Tensor):
        return _calibration_tensor(calibration), "tensor"
    if isinstance(calibration, (bytes, bytearray, str, np.ndarray)):
        return to_ids(calibration), "bytes"
    return to_ids(read_bytes(calibration, what="calibration text")), str(calibration)


def _check_numbers(quantile, v_init, seq_len, seed, design_T, design_max_spikes) -> None:
    """convert()'s numeric arguments: types first (a string or bool is refused, not compared),
    then ranges; the same one-line ConfigError as the CLI."""
    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))

    for name, value in (("quantile", quantile), ("v_init", v_init)):
        if not (is_int(value) or isinstance(value, (float, np.floating))) or not np.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value!r}")
    for name, value, low in (("seq_len", seq_len, 2), ("design_T", design_T, 1),
                             ("design_max_spikes", design_max_spikes, 1), ("seed", seed, 0)):
        if not is_int(value) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")


def _calibration_tensor(calibration: torch.Tensor) -> torch.Tensor:
    """Calibration given as token ids: integers (floats refused, not truncated) in [0, 256)."""
    if calibration.is_floating_point() or calibration.is_complex() or calibration.dtype == torch.bool:
        raise ConfigError(f"calibration ids must be integers, got {str(calibration.dtype).replace('torch.', '')}")
    ids = calibration.reshape(-1).to(torch.int64).cpu()
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) > 255):
        raise ConfigError("calibration ids must be bytes in [0, 256)")
    return ids


def convert(model, gating: str = "product", calibration=None, granularity: str = "neuron",
            quantile: float = 1.0, v_init: float = 0.5, seq_len: int = 256, seed: int = 0,
            statistic: str = "mse", design_T: int = 16, design_max_spikes: int = 4,
            progress: bool = False, log=None) -> SpikingNetwork:
    """Dense BDH -> SpikingNetwork.

    gating: 'gain' (y neurons encode a*b; x activity multiplies their input current) or
    'product' (y neurons encode b; a product node multiplies decoded counts).
    calibration: bytes or str (the text itself), a pathlib.Path (a file), token ids, or None
    for the shipped calibration text.
    A spiking-aware checkpoint (``model.spiking_aware``, written by ``bdh-train --spiking-aware``)
    brings the thresholds it was fine-tuned with: they are used instead of calibrated ones (the
    calibration text then only feeds the recorded statistics), and ``log`` is told so.
    statistic: 'max' (per-neuron maximum on the calibration text), 'quantile' (that quantile of
    each neuron's values), or 'mse' (per neuron, the threshold minimising the expected decoding
    error at design_T timesteps with up to design_max_spikes spikes per step).
    granularity: 'neuron' (silent neurons fall back to their head's value), 'head' or
    'population'. v_init: initial membrane potential / threshold.
    """
    _check_numbers(quantile=quantile, v_init=v_init, seq_len=seq_len, seed=seed, design_T=design_T,
                   design_max_spikes=design_max_spikes)
    if gating not in GATINGS:
        raise ConfigError(f"unknown gating {gating!r}: use one of {', '.join(GATINGS)}")
    if granularity not in GRANULARITIES:
        raise ConfigError(f"unknown threshold granularity {granularity!r}: use one of {', '.join(GRANULARITIES)}")
    if statistic not in STATISTICS:
        raise ConfigError(f"unknown threshold statistic {statistic!r}: use one of {', '.join(STATISTICS)}")
    if statistic != "quantile":
        quantile = 1.0
    if not 0.0 < quantile <= 1.0:
        raise ConfigError(f"threshold quantile must be in (0, 1], got {quantile}")
    if not 0.0 <= v_init < 1.0:
        raise ConfigError(f"v_init must be in [0, 1), got {v_init}")
    started = time.perf_counter()
    torch.manual_seed(seed)
    ids, calib_name = _calibration_ids(calibration)
    dense = _float64_copy(model)
    stats = collect_stats(dense, ids, gating, seq_len=seq_len, progress=progress, quantile=quantile)
    design = (design_T, design_max_spikes) if statistic == "mse" else None
    theta_x, fb_x = thresholds(stats["x"], granularity, quantile, design)
    theta_y, fb_y = thresholds(stats["y"], granularity, quantile, design)
    aware = trained_thresholds(model, gating, v_init, log)
    if aware is not None:
        theta_x, theta_y = aware["theta_x"], aware["theta_y"]
    constrained = constraint_thresholds(model, gating, design_max_spikes, log)
    if constrained is not None:
        theta_x, theta_y = constrained
    c = model.config
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    arrays = {
        "embed": sd["embed.weight"].double().numpy(),
        "encoder": sd["encoder"].double().numpy(),
        "encoder_v": sd["encoder_v"].double().numpy(),
        "decoder": sd["decoder"].double().numpy(),
        "lm_head": sd["lm_head"].double().numpy(),
        "freqs": sd["attn.freqs"].to(torch.float32).reshape(-1).numpy(),
        "theta_x": theta_x.numpy(),
        "theta_y": theta_y.numpy(),
    }
    config = {"n_layer": c.n_layer, "n_embd": c.n_embd, "n_head": c.n_head, "n_neurons": c.n_neurons,
              "vocab_size": c.vocab_size, "mlp_internal_dim_multiplier": c.mlp_internal_dim_multiplier}
    calib_bytes = bytes(ids.to(torch.uint8).numpy().tobytes())
    net = SpikingNetwork(
        config=config, arrays=arrays, gating=gating, v_init=v_init,
        calibration={
            "text": calib_name,
            "text_sha256": hashlib.sha256(calib_bytes).hexdigest(),
            "bytes": int(ids.numel()),
            "seq_len": seq_len,
            "statistic": statistic if statistic != "quantile" else f"quantile {quantile}",
            "design": {"timesteps": design_T, "max_spikes": design_max_spikes} if design else None,
            "granularity": granularity,
            "thresholds_from": ("the spiking-aware checkpoint (T={timesteps}, K={max_spikes}; calibration text "
                                "used only for statistics)".format(**aware) if aware is not None else
                                f"the constraint checkpoint (rung {model.constraints['rung']}; calibration text used "
                                "only for statistics)" if constrained is not None else "calibration"),
            "silent_neuron_fallback": {"x": fb_x, "y": fb_y},
            "y_encodes": "a*b (gated value)" if gating == "gain" else "b",
            "active_fraction": {"x": float(stats["x"].active.sum()) / (stats["x"].tokens * stats["x"].active.numel()),
                                "y": float(stats["y"].active.sum()) / (stats["y"].tokens * stats["y"].active.numel())},
        },
        provenance={
            "bdh_spiking_version": __version__,
            "torch": torch.__version__,
            "seed": seed,
            "created_unix": int(time.time()),
            **getattr(model, "provenance", {}),
        },
    )
    net.provenance["conversion_seconds"] = round(time.perf_counter() - started, 3)
    return net


def _float64_copy(model):
    import copy

    dense = copy.deepcopy(model).to(torch.float64).eval()
    dense.attn.freqs = model.attn.freqs.to(torch.float32).clone()
    return dense


def trained_thresholds(model, gating: str, v_init: float, log=None):
    """The thresholds a spiking-aware checkpoint recorded (dict with theta_x, theta_y as float64
    tensors, timesteps, max_spikes), or None for a plain model. Refuses a conversion that would
    not be the network the model was fine-tuned for (another gating or v_init)."""
    entry = getattr(model, "spiking_aware", None)
    if not entry:
        return None
    if gating != entry.get("gating", "product") or abs(v_init - float(entry.get("v_init", 0.5))) > 0:
        raise ConfigError(f"this checkpoint was fine-tuned spiking-aware for gating {entry.get('gating')!r} and "
                          f"v_init {entry.get('v_init')}: convert it with those (got {gating!r}, {v_init})")
    c = model.config
    shape = (c.n_layer, c.n_head, c.n_neurons)
    out = dict(entry)
    for key in ("theta_x", "theta_y"):
        theta = torch.as_tensor(entry[key], dtype=torch.float64)
        if tuple(theta.shape) != shape or not bool((theta > 0).all()):
            raise ConfigError(f"the checkpoint's spiking-aware {key} has shape {tuple(theta.shape)} (need {shape}, "
                              "all positive)")
        out[key] = theta.contiguous()
    if log is not None:
        log(f"using the thresholds of the spiking-aware checkpoint (fine-tuned at T={entry['timesteps']}, "
            f"K={entry['max_spikes']}) instead of recalibrating")
    return out


def constraint_thresholds(model, gating: str, design_max_spikes: int, log=None):
    """(theta_x, theta_y) a constraint checkpoint recorded, for a conversion with one spike per
    step (mode biophysical); None for another checkpoint or another design (then recalibrated,
    and ``log`` says so). A conversion with another gating than the training's is refused."""
    entry = getattr(model, "constraints", None)
    if not entry:
        return None
    rung = entry.get("rung")
    if gating != entry.get("gating", "product"):
        raise ConfigError(f"this checkpoint was fine-tuned under constraint {rung!r} for gating "
                          f"{entry.get('gating')!r}: convert it with that gating (got {gating!r})")
    if design_max_spikes != 1:
        if log is not None:
            log(f"note: the checkpoint's constraint thresholds (rung {rung}) are designed for one spike per step; "
                f"this conversion (K={design_max_spikes}) recalibrates instead")
        return None
    c = model.config
    shape = (c.n_layer, c.n_head, c.n_neurons)
    out = []
    for key in ("theta_x", "theta_y"):
        theta = torch.as_tensor(entry[key], dtype=torch.float64)
        if tuple(theta.shape) != shape or not bool((theta > 0).all()):
            raise ConfigError(f"the checkpoint's constraint {key} has shape {tuple(theta.shape)} (need {shape}, "
                              "all positive)")
        out.append(theta.contiguous())
    if log is not None:
        bio = entry.get("biophysical") or {}
        log(f"using the thresholds the checkpoint was fine-tuned with under constraint {rung!r} instead of "
            f"recalibrating (trained for token_ms={bio.get('token_ms')}, max_rate_hz={bio.get('max_rate_hz')}, "
            f"schedule {bio.get('schedule')}: simulate with the same parameters)")
    return tuple(out)
