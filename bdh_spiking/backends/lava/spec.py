"""The Lava process graph of a SpikingNetwork as a JSON-able description (the "spec", saved as
lava_graph.json), what each mode lowers it to (``LOWERINGS``), and the schedule.

Schedule (Lava timesteps are numbered from 1, as ``PyLoihiProcessModel.time_step``):

* One token occupies each layer process for ``period = 2T`` timesteps: T steps of its x
  population, then T steps of its y population (each Lava timestep advances one population by
  one neuron timestep). The layer's output is sent in its last y step.
* Layer-to-layer connections are direct port connections (no delay: a PyLoihiProcessModel
  receives in the same timestep what its upstream neighbour sent), so layer l+1 starts token t in
  the step layer l finishes it: layer l sees token t first at ``offset_l + t*period`` with
  ``offset_l = 2 + l*(2T-1)``. Layers are pipelined: layer 0 works on token t+1 while layer 1
  works on token t.
* Lava's Dense sends, in each timestep, what it accumulated in the previous one (so recurrent
  graphs cannot deadlock): one step of delay. The source spikes token t's input line at step
  ``1 + t*period``, Dense(embed) hands the embedding row to layer 0 at ``2 + t*period``; the
  logits of token t reach the sink at ``3 + t*period + L*(2T-1)``.
* A run of n tokens therefore takes ``3 + (n-1)*2T + L*(2T-1)`` Lava timesteps: 2T per token
  in steady state, plus the pipeline's fill latency.
"""

from __future__ import annotations

import dataclasses

from ...errors import ConfigError
from ...semantics import Plasticity, SimSettings

GRAPH_FORMAT = "bdh-spiking-lava-graph"
GRAPH_VERSION = 1
NETWORK_FILE = "network.bdhsnn"
PACKAGE = "bdh_spiking.backends.lava"
LAYER_CLASS = f"{PACKAGE}.processes.BDHLayer"
SINK_CLASS = f"{PACKAGE}.processes.LogitSink"
DENSE_NOTE = ("weights stored as 2*mantissa (Lava's mixed-sign 8-bit convention), "
              "a_out = (weights . s_in) >> -weight_exp (floor)")


@dataclasses.dataclass(frozen=True)
class Lowering:
    """What a mode makes of the graph: the ProcessModels (by tag), the arrays' names and the data
    types of the source spikes and Dense weights. Everything else is common to both modes."""

    tag: str
    source_model: str
    dense_model: str
    layer_model: str
    sink_model: str
    tables: str  # prefix of the arrays' names: "" (float64 folded weights) or "q_" (integer tables)
    layer_weights: dict  # Var -> the array it is made of, for the description
    integer: bool

    @property
    def run_cfg(self) -> str:
        return f"Loihi2SimCfg(select_tag='{self.tag}')"


LOWERINGS = {
    "discrete": Lowering(
        tag="floating_pt", source_model="lava.proc.io.source.PySendModelFloat",
        dense_model="lava.proc.dense.models.PyDenseModelFloat", layer_model=f"{PACKAGE}.models.PyBDHLayerModelFloat",
        sink_model=f"{PACKAGE}.models.PyLogitSinkModelFloat", tables="", integer=False,
        layer_weights={"w_x": "W_x[{layer}] = encoder / theta_x[{layer}] (semantics.fold_weights)",
                       "w_y": "W_y[{layer}] = encoder_v / theta_y[{layer}]", "theta_x": "theta_x[{layer}]",
                       "theta_y": "theta_y[{layer}]", "decoder": "decoder",
                       "cos/sin": "semantics.oscillator_cos_sin(freqs, t)"}),
    "fixed-point": Lowering(
        tag="fixed_pt", source_model="lava.proc.io.source.PySendModelFixed",
        dense_model="lava.proc.dense.models.PyDenseModelBitAcc", layer_model=f"{PACKAGE}.models.PyBDHLayerModelFixed",
        sink_model=f"{PACKAGE}.models.PyLogitSinkModelFixed", tables="q_", integer=True,
        layer_weights={"w_x": "q_W_x[{layer}]", "w_y": "q_W_y[{layer}]", "shift_x": "q_W_x_shift[{layer}]",
                       "shift_y": "q_W_y_shift[{layer}]", "theta_x": "q_theta_x[{layer}]",
                       "theta_y": "q_theta_y[{layer}]", "decoder": "q_decoder",
                       "cos/sin": "semantics.fixed_point.oscillator_table(freqs, n, frac_bits)"}),
}


def lowering(mode: str) -> Lowering:
    if mode not in LOWERINGS:
        raise ConfigError(f"the lava backend runs modes {', '.join(repr(m) for m in LOWERINGS)}, not {mode!r}")
    return LOWERINGS[mode]


def check_lowerable(net, mode: str) -> None:
    """What only Lava refuses: its Dense (embedding and readout) holds 8-bit weights."""
    if lowering(mode).integer and net.quantization.format.weight_bits > 8:
        raise ConfigError("the lava backend's fixed_pt graph uses Lava's Dense (8-bit weights): quantize with "
                          "weight_bits <= 8")


# -- the spec: processes, ports, connections, schedule ------------------------------------
def make_spec(net, settings: SimSettings, plasticity: Plasticity | None = None) -> dict:
    """A JSON-able description of the process graph; with the network file it is all that is
    needed to rebuild and run the graph (batch size and sequence length come with the input)."""
    low = lowering(settings.mode)
    check_lowerable(net, settings.mode)
    d = net.dims
    period, latency = 2 * settings.timesteps, 2 * settings.timesteps - 1
    procs = [_source(low), _dense(net, low, "embed"),
             *(_layer(net, low, layer, latency) for layer in range(d.L)),
             _dense(net, low, "readout"), _sink(low, 3 + d.L * latency)]
    spec = {
        "format": GRAPH_FORMAT, "format_version": GRAPH_VERSION, "network": NETWORK_FILE,
        "settings": {"timesteps": settings.timesteps, "coding": settings.coding, "max_spikes": settings.max_spikes,
                     "mode": settings.mode},
        "plasticity": dataclasses.asdict(plasticity or Plasticity()),
        "gating": net.gating, "v_init": net.v_init, "dims": d.as_dict(),
        "lava": {"version": _lava_version(), "run_cfg": low.run_cfg,
                 "batch": "a batch of B sequences runs side by side: population Vars are (B, H, N), ports "
                          "(B*D,) / (B*V,), Dense weights block-diagonal kron(eye(B), W)"},
        "schedule": _schedule(d.L, period, latency),
        "processes": procs,
        "connections": _connections(d.L),
    }
    if low.integer:
        q = net.quantization
        spec["quantization"] = {"params": q.format.as_dict(), "lm_shift": q.lm_shift,
                                "logit_scale_exp": q.logit_scale_exp, "v0": q.v0}
    return spec


def _source(low: Lowering) -> dict:
    return {"name": "source", "origin": "lava", "class": "lava.proc.io.source.RingBuffer", "model": low.source_model,
            "role": "token input: one spike on the token's input line (one of V per sequence) at the token's "
                    "first step", "ports": {"s_out": "B*V"}}


def _dense(net, low: Lowering, name: str) -> dict:
    embed = name == "embed"
    entry = {"name": name, "origin": "lava", "class": "lava.proc.dense.process.Dense", "model": low.dense_model,
             "weights": low.tables + ("embed" if embed else "lm_head"), "transpose": True,
             "num_message_bits": 0 if embed else 24, "delay_steps": 1,
             "role": "embedding: binary input spike -> graded embedding row" if embed else "graded residual -> logits",
             "ports": {"s_in": "B*V", "a_out": "B*D"} if embed else {"s_in": "B*D", "a_out": "B*V"}}
    if low.integer:
        entry["weight_exp"] = -1 if embed else -(net.quantization.lm_shift + 1)
        entry["note"] = DENSE_NOTE
    return entry


def _layer(net, low: Lowering, layer: int, latency: int) -> dict:
    return {"name": f"layer{layer}", "origin": "bdh_spiking", "layer": layer, "class": LAYER_CLASS,
            "model": low.layer_model, "weights": {k: v.format(layer=layer) for k, v in low.layer_weights.items()},
            "normalize_input": layer == 0, "offset": 2 + layer * latency,
            "role": "x population (H*N IF), plastic synapses S, LayerNorm, y population (H*N IF), "
                    f"{net.gating} gating, decoder and residual LayerNorms",
            "ports": {"x_in": "B*D", "x_out": "B*D"}}


def _sink(low: Lowering, first_step: int) -> dict:
    return {"name": "sink", "origin": "bdh_spiking", "class": SINK_CLASS, "model": low.sink_model,
            "first_step": first_step, "role": "keeps the logits of each token's logits step (Lava's "
            "io.sink.RingBuffer would do, but Var.get() in Lava 0.10 moves one value per message)",
            "ports": {"a_in": "B*V"}}


def _connections(n_layers: int) -> list:
    chain = ["source.s_out", "embed.s_in", "embed.a_out"] + sum(
        [[f"layer{i}.x_in", f"layer{i}.x_out"] for i in range(n_layers)], []) + [
        "readout.s_in", "readout.a_out", "sink.a_in"]
    return [{"from": src, "to": dst, "delay_steps": 0,
             "note": "direct port connection (the Dense processes add their own step of delay)"}
            for src, dst in zip(chain[0::2], chain[1::2])]


def _schedule(n_layers: int, period: int, latency: int) -> dict:
    return {
        "period_steps_per_token": period, "layer_latency_steps": latency,
        "dense_delay_steps": 1,
        "source_spike_step": "1 + t*period",
        "layer_first_step": "offset_l + t*period, offset_l = 2 + l*(2T-1)",
        "layer_offsets": [2 + layer * latency for layer in range(n_layers)],
        "x_steps": "offset_l + t*period + k, k = 0..T-1",
        "y_steps": "offset_l + t*period + T + k, k = 0..T-1",
        "logits_step": f"3 + t*period + L*(2T-1) = {3 + n_layers * latency} + t*{period}",
        "total_steps": f"3 + (n-1)*period + L*(2T-1) = {3 + n_layers * latency - period} + n*{period}",
    }


def _lava_version() -> str:
    try:
        from importlib.metadata import version

        return version("lava-nc")
    except Exception:  # noqa: BLE001 - metadata is informative only
        return "unknown"


def total_steps(spec: dict, n_tokens: int) -> int:
    s = spec["schedule"]
    return 3 + (n_tokens - 1) * s["period_steps_per_token"] + spec["dims"]["L"] * s["layer_latency_steps"]
