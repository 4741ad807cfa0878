"""The parameters of mode 'biophysical': the shipped toml file, a user's file, overrides by name;
validated here (the registry knows their names, only this module their values)."""

from __future__ import annotations

import math
import sys
from importlib import resources
from pathlib import Path

from ...errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the tomli backport (a dependency there)
    import tomli as tomllib

SCHEDULES = ("pipelined", "sequential")
RULES = ("trace", "rate")
PLASTIC_READS = ("event", "summed")  # rung psc's plastic read (psc_read.py): by x's spikes, or summed each graded step
# flat parameter name -> (toml section or None for top level, type)
PARAMS = {
    "seed": (None, int), "dt_ms": ("time", float), "token_ms": ("time", float), "schedule": ("time", str),
    "tau_m_ms": ("neuron", float), "t_ref_ms": ("neuron", float), "max_rate_hz": ("neuron", float),
    "v_start": ("neuron", float), "noise": ("neuron", float), "tau_syn_ms": ("synapse", float),
    "rule": ("plasticity", str), "tau_pre_ms": ("plasticity", float), "tau_post_ms": ("plasticity", float),
    "graded_dt_ms": ("psc", float), "dendrite_dt_ms": ("psc", float), "tau_gate_ms": ("psc", float),
    "tau_elig_ms": ("psc", float), "plastic_read": ("psc", str),
    # rungs local-plasticity and divisive-norm (issue 16); checked by their rung (rungs.py)
    "w_max": ("local", float), "tau_decay_ms": ("local", float), "local_payload": ("local", str),
    "norm_sigma": ("divnorm", float), "tau_pool_ms": ("divnorm", float), "subtract_mean": ("divnorm", bool),
}
INFINITE_OK = ("tau_decay_ms",)  # inf: no decay
ALIASES = {"max_rate": "max_rate_hz"}
POSITIVE = ("dt_ms", "token_ms", "tau_m_ms", "tau_syn_ms", "tau_pre_ms", "tau_post_ms", "max_rate_hz", "graded_dt_ms",
            "dendrite_dt_ms", "tau_gate_ms", "tau_elig_ms")
MIN_PHASE_STEPS = 8  # a stage window needs room for its event steps (load, read, emit) and some spikes


def default_params_path() -> Path:
    return Path(str(resources.files("bdh_spiking") / "data" / "biophysical.toml"))


def _flatten(doc: dict, where: str) -> dict:
    out = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            for k, v in value.items():
                if k not in PARAMS or PARAMS[k][0] != key:
                    raise ConfigError(f"{where}: unknown parameter [{key}] {k} (known: {', '.join(PARAMS)})")
                out[k] = v
        elif key in PARAMS and PARAMS[key][0] is None:
            out[key] = value
        else:
            raise ConfigError(f"{where}: unknown parameter {key!r} (known: {', '.join(PARAMS)})")
    return out


def _read_toml(path) -> dict:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read biophysical parameter file {path}: {exc.strerror or exc}") from None
    try:
        return _flatten(tomllib.loads(text), str(path))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def load_params(params_file=None, **overrides) -> dict:
    """The shipped defaults, then params_file's values, then the overrides (None: not given); validated."""
    p = _read_toml(default_params_path())
    if params_file is not None:
        p.update(_read_toml(params_file))
    for key, value in overrides.items():
        key = ALIASES.get(key, key)
        if key not in PARAMS:
            raise ConfigError(f"unknown biophysical parameter {key!r} (known: {', '.join(PARAMS)})")
        if value is not None:
            p[key] = value
    return validate_params(p)


def _typed(key: str, value, typ):
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"biophysical parameter {key} must be true or false, got {value!r}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                math.isfinite(value) or (key in INFINITE_OK and value == math.inf)):
            raise ConfigError(f"biophysical parameter {key} must be a finite number, got {value!r}")
        return float(value)
    if typ is int:
        if isinstance(value, bool) or int(value) != value:
            raise ConfigError(f"biophysical parameter {key} must be an integer, got {value!r}")
        return int(value)
    return str(value)


def validate_params(p: dict) -> dict:
    out = {}
    for key, (_, typ) in PARAMS.items():
        if key not in p:
            raise ConfigError(f"biophysical parameter {key!r} is missing")
        out[key] = _typed(key, p[key], typ)
    for key in POSITIVE:
        if not out[key] > 0:
            raise ConfigError(f"biophysical parameter {key} must be > 0, got {out[key]:g}")
    if out["t_ref_ms"] < 0:
        raise ConfigError(f"refractory period t_ref_ms must be >= 0, got {out['t_ref_ms']:g}")
    if out["noise"] < 0:
        raise ConfigError(f"noise must be >= 0, got {out['noise']:g}")
    if out["t_ref_ms"] > 0 and out["max_rate_hz"] >= 1000.0 / out["t_ref_ms"]:
        raise ConfigError(f"max_rate_hz {out['max_rate_hz']:g} must be below 1/t_ref = "
                          f"{1000.0 / out['t_ref_ms']:g} Hz")
    if not 0.0 <= out["v_start"] < 1.0:
        raise ConfigError(f"v_start must lie in [0, 1) (threshold 1), got {out['v_start']:g}")
    if out["token_ms"] < out["dt_ms"]:
        raise ConfigError(f"token_ms {out['token_ms']:g} is shorter than the time step dt_ms {out['dt_ms']:g}")
    if out["schedule"] not in SCHEDULES:
        raise ConfigError(f"unknown schedule {out['schedule']!r}: use one of {', '.join(SCHEDULES)}")
    if out["plastic_read"] not in PLASTIC_READS:
        raise ConfigError(f"unknown plastic_read {out['plastic_read']!r}: use one of {', '.join(PLASTIC_READS)}")
    if out["rule"] not in RULES:
        raise ConfigError(f"unknown plasticity rule {out['rule']!r}: use one of {', '.join(RULES)}")
    return out


def phase_steps(p: dict, n_layer: int) -> int:
    """Brian2 steps of one stage window (x or y phase of one layer)."""
    stage_ms = p["token_ms"] / (2 * n_layer) if p["schedule"] == "sequential" else p["token_ms"]
    steps = int(round(stage_ms / p["dt_ms"]))
    if steps < MIN_PHASE_STEPS:
        raise ConfigError(f"token_ms {p['token_ms']:g} with schedule {p['schedule']} leaves {stage_ms:g} ms per "
                          f"stage: at least {MIN_PHASE_STEPS} steps of dt_ms {p['dt_ms']:g} are needed")
    return steps


def effective_window_ms(window_ms: float, tau_syn_ms: float) -> float:
    """Integral over the window of a unit current switched on at its start through the synapse."""
    return window_ms - tau_syn_ms * (1.0 - math.exp(-window_ms / tau_syn_ms))
