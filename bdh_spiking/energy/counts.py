"""What one token costs in countable events: the spiking network's (read from a run's own spikes,
with the fan-out rules of ``semantics.events``) and the dense model's (MACs and elementwise ops).

Every rule is written out in docs/energy.md.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..network import Dims
from ..semantics import FanOut

# event-count keys compared across backends (all derived from the backend's own spikes)
COUNT_KEYS = ("x_spikes", "y_spikes", "x_active", "y_active", "active_columns", "g_nonzero",
              "synaptic_events", "graded_synaptic_events", "plastic_updates", "neuron_updates")
# per-run figures of spiking_counts that are not divided by the token count
PER_RUN = ("tokens", "timesteps", "coding", "synaptic_events_graded_coding", "spikes_per_synapse", "spike_rate")


def _dims(net_or_dims) -> Dims:
    """A network's Dims, a Dims, or a dict with keys L, H, D, N, V."""
    if hasattr(net_or_dims, "dims"):
        return net_or_dims.dims
    if isinstance(net_or_dims, Dims):
        return net_or_dims
    return Dims(**{k: int(net_or_dims[k]) for k in ("L", "H", "D", "N", "V")})


def layernorm_ops(dims) -> dict:
    """Adds and multiplies of every LayerNorm of one token (the same in the dense and spiking forms).

    LayerNorm over n values: n adds (mean), n subtractions, n multiplies + n adds (variance),
    n multiplies (scale) and one reciprocal square root (counted as one multiply): 3n adds, 2n+1 mults.
    Per token: the embedding (D), and per layer the attention read-out per head (H x D), the
    decoder output (D) and the residual sum (D).
    """
    d = _dims(dims)
    L, H, D = d.L, d.H, d.D
    values = D + L * (H * D + 2 * D)
    norms = 1 + L * (H + 2)
    return {"adds": 3 * values, "mults": 2 * values + norms}


def steps_per_token(settings: dict) -> int:
    """Neuron timesteps per token of a run: its ``timesteps`` (the -T flag), except in mode
    'biophysical', where -T means nothing and the simulator's own steps of one token window count."""
    if settings.get("mode") != "biophysical":
        return int(settings["timesteps"])
    steps = settings.get("sim_steps_per_token")
    if steps is not None:
        return int(steps)
    bio = settings.get("biophysical") or {}
    token_ms = settings.get("token_ms", bio.get("token_ms"))
    dt_ms = settings.get("dt_ms", bio.get("dt_ms"))
    if token_ms is None or dt_ms is None:
        raise ConfigError("a biophysical result names neither sim_steps_per_token nor token_ms and dt_ms: "
                          "its spike rate cannot be computed")
    return int(round(token_ms / dt_ms))


def spiking_counts(result, net) -> dict:
    """Events of one simulation run, per token, from the backend's own spike statistics.

    Starts from ``semantics.events.event_counts`` (result.events) and the per-token statistics, and
    adds the nodes that cost something without being spikes. Every rule is in docs/energy.md.
    """
    d = net.dims
    fan = FanOut.of(d, net.gating)
    ev = result.events
    tok = ev["tokens"]
    steps = steps_per_token(result.settings)
    gain = net.gating == "gain"
    tot = {k: float(v.sum()) for k, v in result.stats.items()}
    ac, gnz, xa = tot["active_columns"], tot["g_nonzero"], tot["x_active"]

    graded_lm = tok * fan.graded_lm_head_per_token  # final residual -> lm_head
    graded_E = tok * fan.graded_encoder_per_token  # LayerNorm outputs -> E and E_v, dense graded input
    graded_dec = gnz * fan.product_output  # product node's non-zero outputs -> decoder (0 with gain)
    neurons = d.L * 2 * d.H * d.N  # IF neurons (x and y) per token
    inactive = 0.0 if not gain else (tok * d.L * d.H * d.N - xa) * steps  # gain: y neurons whose gate x is silent
    ln = layernorm_ops(d)
    gating_mults = xa if gain else gnz
    total = {
        "tokens": tok,
        "timesteps": steps,
        "coding": result.settings["coding"],
        "spikes": ev["spikes"],
        "x_spikes": ev["x_spikes"],
        "y_spikes": ev["y_spikes"],
        "synaptic_events": ev["synaptic_events"],  # spike-driven: x (2D+1), y (D gain / 1 product)
        "synaptic_events_graded_coding": result.settings["coding"] == "graded",
        "graded_synaptic_events": ev["graded_synaptic_events"],
        "graded_encoder_events": graded_E,
        "graded_lm_head_events": graded_lm,
        "graded_decoder_events": graded_dec,
        "neuron_updates": ev["neuron_updates"],
        "neuron_updates_active": ev["neuron_updates"] - inactive,
        "neuron_updates_inactive": inactive,
        "plastic_updates": ev["plastic_updates"],  # event-driven: D per active column
        "plastic_updates_rotating": tok * d.L * d.H * d.D * d.N,  # the non-event-driven (rotating-frame) form
        "plastic_reads": ev["plastic_reads"],
        "routed_spikes": ev["spikes"],
        "routed_graded_packets": tok * (d.L * (d.D + d.H * d.D) + d.D) + (0.0 if gain else gnz),
        "arith_adds": tok * ln["adds"] + tok * d.L * d.D + ac,  # LayerNorm, residual sum, oscillator rotation
        "arith_mults": tok * ln["mults"] + gating_mults + 2 * ac,  # LayerNorm, gating, oscillator
        "gating_mults": gating_mults,
        "oscillator_mults": 2 * ac,
        "oscillator_adds": ac,
        "layernorm_adds": tok * ln["adds"],
        "layernorm_mults": tok * ln["mults"],
        "residual_adds": tok * d.L * d.D,
        "x_active": xa,
        "y_active": tot["y_active"],
        "active_columns": ac,
        "g_nonzero": gnz,
        "spikes_per_synapse": ev["synaptic_events"] / (tok * d.L * fan.out_synapses_per_layer),
        "spike_rate": ev["spikes"] / (tok * neurons * steps),
    }
    return {k: (v if k in PER_RUN else v / tok) for k, v in total.items()}


def dense_macs(dims, form: str = "recurrent", seq_len: int | None = None, density: dict | None = None) -> float:
    """MACs of one token of the dense forward pass.

    recurrent: per layer 3 H D N (E, E_v, decoder) + 2 H D N (state read S q and rank-1 write x q^T),
    plus D V (lm_head). parallel at sequence length S (the official code's full S x S attention,
    masked afterwards): per layer 3 H D N + H S (N + D) per token (scores q q^T and their product
    with x, averaged over the S tokens), plus D V. density (activation-sparse, recurrent form):
    the state read/write scale with the non-zero fraction of q, the decoder with that of g.
    """
    d = _dims(dims)
    L, H, D, N, V = d.L, d.H, d.D, d.N, d.V
    if form == "recurrent":
        if density is None:
            return float(L * (3 * H * D * N + 2 * H * D * N) + D * V)
        return float(L * (2 * H * D * N + density["q"] * 2 * H * D * N + density["g"] * H * D * N) + D * V)
    if form == "parallel":
        if not seq_len:
            raise ConfigError("the parallel form needs the sequence length")
        return float(L * (3 * H * D * N + H * seq_len * (N + D)) + D * V)
    raise ConfigError(f"unknown dense form {form!r}: use recurrent or parallel")


def dense_elementwise(dims, density: dict | None = None) -> dict:
    """Non-MAC FP32 arithmetic of one dense token: LayerNorms, residual sums, a*b, RoPE rotation."""
    d = _dims(dims)
    L, H, D, N = d.L, d.H, d.D, d.N
    ln = layernorm_ops(d)
    rq = 1.0 if density is None else density["q"]
    ra = 1.0 if density is None else density["a"]
    return {"adds": ln["adds"] + L * D + rq * L * H * N,
            "mults": ln["mults"] + ra * L * H * N + rq * 2 * L * H * N}


def dense_activity(model, ids) -> dict:
    """Measured non-zero fractions of the dense model on ``ids``: a = ReLU(xE), q = R a, g = a*b."""
    from ..model import rope_cos_sin, rotate_pairs
    from ..dense_probe import dense_reference

    ref = dense_reference(model, ids)
    a, g = ref.a, ref.g  # B,T,L,H,N
    cos, sin = rope_cos_sin(model.attn.freqs, torch.arange(a.shape[1]))
    q = rotate_pairs(a, cos[None, :, None, None, :], sin[None, :, None, None, :])
    return {"a": float((a != 0).double().mean()), "q": float((q != 0).double().mean()),
            "g": float((g != 0).double().mean())}


def compare_event_counts(results: dict) -> dict:
    """{backend: SimulationResult} -> whether every event count is identical, and the largest difference."""
    names = list(results)
    out = {"backends": names, "identical": True, "max_abs_difference": 0.0, "max_rel_difference": 0.0,
           "worst_key": None, "compared": len(names) > 1}
    if len(names) < 2:
        return out
    base = results[names[0]]
    for name in names[1:]:
        other = results[name]
        for key in COUNT_KEYS:
            a = _total(base, key)
            b = _total(other, key)
            diff = abs(a - b)
            if diff > out["max_abs_difference"]:
                out.update(max_abs_difference=diff, max_rel_difference=diff / max(abs(a), 1e-300),
                           worst_key=f"{key} ({names[0]} vs {name})")
    out["identical"] = out["max_abs_difference"] == 0.0
    return out


def _total(result, key) -> float:
    if key in result.stats:
        return float(result.stats[key].sum())
    return float(result.events[key])
