"""The quantizer: a SpikingNetwork -> Loihi 2 style integer formats (mode 'fixed-point').

``quantize(net)`` returns a copy of ``net`` whose ``quantization`` (``network.Quantization``) holds
the integer tables that the fixed-point executors (``backends/fixed_point.py`` and the Lava
backend's ``fixed_pt`` models) run on, the formats, exponents, shifts and a summary of what the
quantization lost (weights zeroed, weights saturated, their errors). Nothing else is changed, so the
quantized network still runs in mode 'discrete' exactly as before, and it saves/loads with
``SpikingNetwork.save``/``load``. It lives in the semantics (not in conversion/) because the backend
registry quantizes a float network on the fly for mode 'fixed-point'.

The integer semantics are specified in docs/spiking-semantics.md, section "Fixed-point mode". Summary:

* weights: signed ``weight_bits`` mantissas with a power-of-two exponent: for E and E_v (which carry
  the thresholds folded in) one exponent per postsynaptic neuron by default (``granularity='neuron'``;
  ``'projection'``: one per layer), for embed, decoder and lm_head one per projection;
  ``m = round(W / 2**e)`` clamped to ``[-2**(b-1), 2**(b-1)-1]``;
* neurons: ``state_bits``-bit membranes and currents, unit threshold ``Θ = 2**threshold_exp``;
* graded values (LayerNorm outputs, decoded activity, oscillator payloads, gated values): signed
  integers of ``payload_bits`` with ``frac_bits`` fraction bits (value = int / 2**frac_bits);
* plastic synapses: a ``plastic_bits`` signed accumulator with ``frac_bits`` fraction bits.

Rounding everywhere is round half away from zero (``fixed_point.round_half_away``, ``rdiv``, ``shift``),
except in Lava's own bit-accurate Dense (readout), which shifts right with floor; every clamp is a
counted saturation.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from ..errors import ConfigError
from ..network import QUANT_FORMAT as FORMAT
from ..network import QUANT_FORMAT_VERSION as FORMAT_VERSION
from ..network import QUANT_TABLES, FixedPointFormat, Quantization
from .fixed_point import SAT_KEYS, oscillator_table, round_half_away  # noqa: F401 (re-exported)
from .weights import fold_weights

GRANULARITIES = ("projection", "neuron")
DEFAULTS = FixedPointFormat().as_dict()
MAX_D = 1024  # integer LayerNorm: sum of squares must stay below 2**63 (see ln_int in the doc)
ARRAYS = tuple(QUANT_TABLES)

__all__ = ["quantize", "is_quantized", "ensure_quantized", "check_quantization", "describe", "round_half_away",
           "oscillator_table", "SAT_KEYS", "DEFAULTS", "FORMAT"]


def _exponent(maxabs: np.ndarray, qmax: int) -> np.ndarray:
    """Smallest e with round(maxabs / 2**e) <= qmax (e such that the largest weight just fits)."""
    maxabs = np.asarray(maxabs, dtype=np.float64)
    safe = np.where(maxabs > 0, maxabs, 1.0)
    e = np.ceil(np.log2(safe / qmax)).astype(np.int64)
    for _ in range(2):  # correct the float log2 by one either way
        e = np.where(round_half_away(safe / np.exp2(e)) > qmax, e + 1, e)
        e = np.where(round_half_away(safe / np.exp2(e - 1)) <= qmax, e - 1, e)
    return np.where(maxabs > 0, e, 0)


def _quantize_weights(W: np.ndarray, bits: int, reduce_axes: tuple, clip_quantile: float, name: str):
    """Mantissas, exponents (broadcastable to W) and the error summary of one projection."""
    qmax, qmin = 2 ** (bits - 1) - 1, -(2 ** (bits - 1))
    absW = np.abs(W)
    if clip_quantile < 1.0:
        scale = np.quantile(absW, clip_quantile, axis=reduce_axes, keepdims=True)
    else:
        scale = absW.max(axis=reduce_axes, keepdims=True)
    e = _exponent(scale, qmax)
    raw = round_half_away(W / np.exp2(e))
    m = np.clip(raw, qmin, qmax)
    deq = m * np.exp2(e)
    err = deq - W
    nz = W != 0
    zeroed = nz & (m == 0)
    saturated = raw != m
    norm = float(np.sqrt((W * W).sum()))
    summary = {
        "weights": int(W.size), "nonzero": int(nz.sum()),
        "zeroed": int(zeroed.sum()), "zeroed_fraction": float(zeroed.sum() / max(1, nz.sum())),
        "zeroed_max_abs_weight": float(absW[zeroed].max()) if zeroed.any() else 0.0,
        "saturated": int(saturated.sum()),
        "saturated_max_abs_error": float(np.abs(err[saturated]).max()) if saturated.any() else 0.0,
        "rel_error": float(np.sqrt((err * err).sum())) / norm if norm > 0 else 0.0,
        "max_abs_error": float(np.abs(err).max()) if err.size else 0.0,
        "max_abs_weight": float(absW.max()) if absW.size else 0.0,
        "exponent_min": int(e.min()), "exponent_max": int(e.max()),
        "note": f"{name}: m = round(W / 2**e) clamped to [{qmin}, {qmax}]; zeroed = nonzero weights "
                "that round to 0 (too small), saturated = weights clamped (too large)",
    }
    return m, e, summary


def _quantize_thresholds(theta: np.ndarray, frac: int, payload_bits: int):
    top = 2 ** (payload_bits - 1) - 1
    raw = round_half_away(theta * 2.0 ** frac)
    q = np.clip(raw, 1, top)
    err = q / 2.0 ** frac - theta
    return q, {"values": int(theta.size), "clamped_to_1": int((raw < 1).sum()), "saturated": int((raw > top).sum()),
               "max_rel_error": float(np.abs(err / theta).max()) if theta.size else 0.0}


def quantize(net, weight_bits: int = 8, state_bits: int = 24, payload_bits: int = 24, threshold_exp: int = 16,
             frac_bits: int = 16, plastic_bits: int = 32, granularity: str = "neuron",
             clip_quantile: float = 1.0):
    """A copy of ``net`` with Loihi 2 integer formats for mode 'fixed-point' (see the module doc).

    weight_bits: signed weight mantissa width (Loihi 2: up to 8); state_bits: membrane/current width
    (Loihi 2: 24); payload_bits: graded spike payload width (Loihi 2: up to 24 in Lava's Dense
    messages); threshold_exp: the unit threshold is 2**threshold_exp state units; frac_bits: fraction
    bits of every graded value; plastic_bits: width of the plastic-synapse accumulator;
    granularity: E and E_v get one weight exponent per postsynaptic neuron ('neuron', default) or per
    layer ('projection': on the default model it zeroes 97% of W_y, the folded thresholds span too many
    octaves for one exponent);
    clip_quantile < 1 picks each exponent from that quantile of |W|, saturating the larger weights.
    """
    p = {"weight_bits": weight_bits, "state_bits": state_bits, "payload_bits": payload_bits,
         "threshold_exp": threshold_exp, "frac_bits": frac_bits, "plastic_bits": plastic_bits,
         "granularity": granularity, "clip_quantile": float(clip_quantile)}
    _validate(p, net)
    w = {k: v.numpy() for k, v in fold_weights(net, "cpu", torch.float64).items()}
    d = net.dims
    L, H, D, N = d.L, d.H, d.D, d.N
    per_neuron = granularity == "neuron"
    axes = (2,) if per_neuron else (1, 2, 3)  # W: L,H,D,N
    summary = {}
    arrays = {}
    k, F = threshold_exp, frac_bits
    for name, key in (("W_x", "E (encoder / theta_x)"), ("W_y", "E_v (encoder_v / theta_y)")):
        m, e, s = _quantize_weights(w[name], weight_bits, axes, clip_quantile, key)
        summary[name] = s
        arrays[f"q_{name}"] = m.astype(_int_dtype(weight_bits))
        # J (state units) = acc * 2**(e - F + k): right shift by F - e - k (negative: left shift)
        arrays[f"q_{name}_shift"] = np.broadcast_to(F - e - k, (L, H, 1, N)).reshape(L, H, N).astype(np.int64)
    exps = {}
    for name in ("embed", "decoder", "lm_head"):
        m, e, s = _quantize_weights(w[name], weight_bits, tuple(range(w[name].ndim)), clip_quantile, name)
        summary[name] = s
        arrays[f"q_{name}"] = m.astype(_int_dtype(weight_bits))
        exps[name] = int(np.asarray(e).reshape(-1)[0])
    for name in ("theta_x", "theta_y"):
        q, s = _quantize_thresholds(w[name], F, payload_bits)
        summary[name] = s
        arrays[f"q_{name}"] = q.astype(np.int64)
    # readout: logits_int = floor(acc / 2**lm_shift) must fit int32 (Lava's Dense output port); |x| is
    # bounded by the payload range, so |acc| <= D * 2**(payload_bits-1) * 2**(weight_bits-1)
    bound = D * 2 ** (payload_bits - 1) * 2 ** (weight_bits - 1)
    lm_shift = max(0, bound.bit_length() - 31)
    qnet = copy.copy(net)
    qnet.extra = copy.deepcopy(net.extra)
    zeroed = sum(summary[n]["zeroed"] for n in ("W_x", "W_y", "embed", "decoder", "lm_head"))
    saturated = sum(summary[n]["saturated"] for n in ("W_x", "W_y", "embed", "decoder", "lm_head"))
    qnet.quantization = Quantization(
        format=FixedPointFormat(**p), v0=int(round_half_away(net.v_init * 2.0 ** k)), exponents=exps,
        lm_shift=lm_shift, logit_scale_exp=lm_shift + exps["lm_head"] - F, summary=summary,
        weights_zeroed=zeroed, weights_saturated=saturated, source_arrays_sha=_digest(net), tables=arrays)
    return qnet


def _int_dtype(bits: int):
    return np.int8 if bits <= 8 else np.int16 if bits <= 16 else np.int32


def _digest(net) -> str:
    import hashlib

    h = hashlib.sha256()
    for name in ("embed", "encoder", "encoder_v", "decoder", "lm_head", "theta_x", "theta_y"):
        h.update(np.ascontiguousarray(net.arrays[name], dtype=np.float64).tobytes())
    return h.hexdigest()


def _validate(p: dict, net) -> None:
    def need(ok, msg):
        if not ok:
            raise ConfigError(f"quantize: {msg}")

    for key in ("weight_bits", "state_bits", "payload_bits", "threshold_exp", "frac_bits", "plastic_bits"):
        need(isinstance(p[key], int) and not isinstance(p[key], bool), f"{key} must be an integer, got {p[key]!r}")
    need(2 <= p["weight_bits"] <= 16, f"weight_bits must be in [2, 16] (Loihi 2: <= 8), got {p['weight_bits']}")
    need(8 <= p["state_bits"] <= 32, f"state_bits must be in [8, 32] (Loihi 2: 24), got {p['state_bits']}")
    need(8 <= p["payload_bits"] <= 32, f"payload_bits must be in [8, 32] (Loihi 2: <= 24 in Lava), got {p['payload_bits']}")
    need(1 <= p["threshold_exp"] <= p["state_bits"] - 3,
         f"threshold_exp must be in [1, state_bits - 3] (the membrane needs headroom above 2**threshold_exp), "
         f"got {p['threshold_exp']}")
    need(4 <= p["frac_bits"] <= p["payload_bits"] - 4, f"frac_bits must be in [4, payload_bits - 4], got {p['frac_bits']}")
    need(8 <= p["plastic_bits"] <= 40, f"plastic_bits must be in [8, 40], got {p['plastic_bits']}")
    need(p["plastic_bits"] + p["payload_bits"] <= 62, "plastic_bits + payload_bits must be <= 62 (int64 products)")
    need(p["state_bits"] + p["payload_bits"] <= 50, "state_bits + payload_bits must be <= 50 (decoding products)")
    need(p["granularity"] in GRANULARITIES, f"granularity must be one of {', '.join(GRANULARITIES)}, got {p['granularity']!r}")
    need(0.5 <= p["clip_quantile"] <= 1.0, f"clip_quantile must be in [0.5, 1], got {p['clip_quantile']}")
    need(p["weight_bits"] + p["payload_bits"] + p["frac_bits"] + (net.dims.D - 1).bit_length() <= 62,
         "weight_bits + payload_bits + frac_bits + log2(n_embd) must be <= 62 (gain-gated y currents in int64)")
    need(net.dims.D <= MAX_D, f"the integer LayerNorm supports n_embd <= {MAX_D}, got {net.dims.D}")
    need(net.dims.N % 2 == 0, "n_neurons must be even (oscillator pairs)")


def is_quantized(net) -> bool:
    return getattr(net, "quantization", None) is not None


def check_quantization(net) -> None:
    """Refuses a quantization this version cannot run, or one made from other float arrays."""
    q = net.quantization
    if q.format_version > FORMAT_VERSION:
        raise ConfigError(f"network quantized with format version {q.format_version}, newer than this "
                          f"bdh-spiking reads ({FORMAT_VERSION})")
    if q.source_arrays_sha != _digest(net):
        raise ConfigError("the network's float arrays changed after it was quantized: run "
                          "bdh_spiking.semantics.quantize.quantize(net) again")
    if q.v0 != int(round_half_away(net.v_init * 2.0 ** q.format.threshold_exp)):
        raise ConfigError("the network's v_init changed after it was quantized: run "
                          "bdh_spiking.semantics.quantize.quantize(net) again")


def ensure_quantized(net, log=None):
    """(net, how): ``net`` itself when it carries a quantization, else ``quantize(net)`` with the
    defaults (mode 'fixed-point' on a float network quantizes on the fly, and says so)."""
    if is_quantized(net):
        check_quantization(net)
        p = net.quantization.format.as_dict()
        return net, "quantized network (quantize() params " + ", ".join(f"{k}={v}" for k, v in p.items()) + ")"
    import warnings

    msg = ("mode 'fixed-point' on a float network: quantizing on the fly with the defaults "
           "(bdh_spiking.semantics.quantize.quantize(net, weight_bits=8, state_bits=24, payload_bits=24, "
           "threshold_exp=16, frac_bits=16, plastic_bits=32); quantize once yourself to choose the formats)")
    warnings.warn(msg, stacklevel=3)
    if log:
        log(msg)
    return quantize(net), "on the fly with quantize() defaults"


def describe(net) -> str:
    """One paragraph on what the quantization lost (for logs and reports)."""
    q = net.quantization
    s = q.summary
    parts = [f"{n}: rel err {s[n]['rel_error']:.2e}, zeroed {s[n]['zeroed']}/{s[n]['nonzero']}, saturated "
             f"{s[n]['saturated']}" for n in ("W_x", "W_y", "embed", "decoder", "lm_head")]
    return f"fixed-point formats {q.format.as_dict()}; " + "; ".join(parts)
