"""The explicit Lava graph (``lava_graph='explicit'``): one process per population and per
projection, as a JSON-able spec (saved as lava_graph.json) with its schedule.

Per layer l (R_l = 2 + l*(2T+1), the step at which the layer's residual input x is sent):

    x ──> E_l (Dense) ──> x_l (IF) ──> plastic_l ──> ln_u_l ──> Ev_l (Sparse) ─┐
    │                      │  a_hat       ^ x                                   │
    │                      └──────────────┴─────> gate_l (gain: a*z -> y_l)  <──┘
    │                                              (product: a*b after y_l)
    │                              y_l (IF) ──> [gate_l] ──> dec_l (Dense) ──> res_l ──> x'
    └──────────────────────────────────────────────────────────────────────────^

* Dense and Sparse (Lava's, and our Projection) send in each step what they accumulated in the
  previous one: one step of delay per projection hop; our processes' ports are direct (no delay).
* x_l receives its current at R_l+1 and steps T times (R_l+1 .. R_l+T), sending the decoded
  activity at R_l+T; plastic_l, ln_u_l send at R_l+T; Ev_l delivers z at R_l+T+1; y_l steps
  R_l+T+1 .. R_l+2T; dec_l delivers the decoder sum at R_l+2T+1, when res_l sends x'.
  Layer latency 2T+1 Lava steps (fused: 2T-1).
* Every value is latched per token, so a layer accepts a token every T steps (each population
  is busy T steps per token): period T Lava steps per token (fused: 2T), first logits at
  3 + L*(2T+1), a run of n tokens takes 3 + L*(2T+1) + (n-1)*T steps.
"""

from __future__ import annotations

import dataclasses

from ...semantics import Plasticity, SimSettings
from .spec import GRAPH_FORMAT, GRAPH_VERSION, NETWORK_FILE, PACKAGE, _lava_version, check_lowerable, lowering

OURS = f"{PACKAGE}.explicit_processes"
MODELS = f"{PACKAGE}.explicit_models"
DENSE = "lava.proc.dense.process.Dense"
SPARSE = "lava.proc.sparse.process.Sparse"
BLOCKDIAG = "hdn->blockdiag_h((hn)(hd))"
LAVA_CLASSES = {DENSE: {"floating_pt": "lava.proc.dense.models.PyDenseModelFloat",
                        "fixed_pt": "lava.proc.dense.models.PyDenseModelBitAcc"},
                SPARSE: {"floating_pt": "lava.proc.sparse.models.PySparseModelFloat",
                         "fixed_pt": "lava.proc.sparse.models.PySparseModelBitAcc"},
                "lava.proc.io.source.RingBuffer": {"floating_pt": "lava.proc.io.source.PySendModelFloat",
                                                   "fixed_pt": "lava.proc.io.source.PySendModelFixed"}}
NO_LOIHI2_MODEL = "ours: no Loihi 2 (NC) ProcessModel in open-source Lava; on chip it would need neuron microcode"


def our_class(name: str) -> str:
    return f"{OURS}.{name}" if name != "LogitSink" else f"{PACKAGE}.processes.LogitSink"


def our_model(name: str, tag: str) -> str:
    suffix = "Float" if tag == "floating_pt" else "Fixed"
    if name == "LogitSink":
        return f"{PACKAGE}.models.PyLogitSinkModel{suffix}"
    return f"{MODELS}.Py{name}Model{suffix}"


def _proc(name, cls, tag, role, ports, **extra) -> dict:
    lava = cls in LAVA_CLASSES
    entry = {"name": name, "origin": "lava" if lava else "bdh_spiking",
             "class": cls if lava else our_class(cls),
             "model": LAVA_CLASSES[cls][tag] if lava else our_model(cls, tag), "role": role, "ports": ports}
    if not lava:
        entry["loihi2"] = NO_LOIHI2_MODEL
    entry.update(extra)
    return entry


def _projection(net, low, name, weights, layout, n_out, n_in, role, **extra) -> dict:
    """A static projection: Lava's Dense (floating point; and embed / lm_head in fixed point), Lava's
    Sparse for the block-diagonal E_v in floating point (only its H*N*D non-zero synapses), or our
    Projection (E, E_v, decoder in fixed point: exact int64 accumulator)."""
    fixed_inner = low.integer and layout not in ("embed", "lm_head")
    blocks = net.dims.H if layout == BLOCKDIAG else 1  # E_v: one D -> N block per head, zeros elsewhere
    cls = "Projection" if fixed_inner else SPARSE if blocks > 1 else DENSE
    entry = _proc(name, cls, low.tag, role, {"s_in": n_in, "a_out": n_out}, weights=low.tables + weights,
                  layout=layout, delay_steps=1, neurons=0, synapses=n_out * n_in // blocks, fan_in=n_in // blocks,
                  num_message_bits=0 if layout == "embed" else 24, **extra)
    if not low.integer:
        entry["weight_type"] = "float64"
    elif fixed_inner:
        entry.update(weight_type=f"int{net.quantization.format.weight_bits} mantissa",
                     accumulator="int64, exact (no weight_exp: the neurons shift per neuron, round half away)",
                     why_not_dense="Lava's bit-accurate Dense: int32 a_out, one weight_exp per connection, floor")
    else:
        entry.update(num_weight_bits=8, weight_exp=-1 if layout == "embed" else -(net.quantization.lm_shift + 1),
                     weight_type="int8 mantissa stored as 2*mantissa (Lava's mixed-sign convention)")
    return entry


def _sched(arrive: dict, send: int) -> dict:
    return {"arrive": arrive, "send": send}


def _layer(net, low, settings, layer: int) -> list:
    d, T, tag = net.dims, settings.timesteps, low.tag
    R = 2 + layer * (2 * T + 1)
    B = "B*"
    hn, hd, D = f"{B}{d.H * d.N}", f"{B}{d.H * d.D}", f"{B}{d.D}"
    gain = net.gating == "gain"
    x_in = "ln_in.x_out" if layer == 0 else f"res{layer - 1}.x_out"
    procs = [
        _projection(net, low, f"E{layer}", "W_x", "hdn->(hn)d", d.H * d.N, d.D, "E: residual -> x currents",
                    layer=layer),
        _proc(f"x{layer}", "IFPopulation", tag, "x population: H*N IF neurons", {"a_in": hn, "s_out": hn},
              layer=layer, pop="x", neurons=d.H * d.N, theta=f"{low.tables}theta_x", shifts=f"{low.tables}W_x_shift",
              **_sched({"a_in": R + 1}, R + T)),
        _proc(f"plastic{layer}", "PlasticSynapses", tag, "plastic synapses S (fixed frame) with the x-pair oscillators",
              {"x_in": D, "a_in": hn, "u_out": hd}, layer=layer, neurons=0, synapses=d.H * d.D * d.N, fan_in=d.N,
              **_sched({"x_in": R, "a_in": R + T}, R + T)),
        _proc(f"ln_u{layer}", "LayerNorm", tag, "per-head LayerNorm of the readout u", {"x_in": hd, "x_out": hd},
              layer=layer, neurons=d.H * d.D, groups="B*H", **_sched({"x_in": R + T}, R + T)),
        _projection(net, low, f"Ev{layer}", "W_y", BLOCKDIAG, d.H * d.N, d.H * d.D,
                    "E_v: per-head readout -> y accumulators", layer=layer),
    ]
    gate = _proc(f"gate{layer}", "Gate", tag, "gain gating: y current a*z" if gain else "product gating: g = a*b",
                 {"a_in": hn, "b_in": hn, "s_out": hn}, layer=layer, neurons=d.H * d.N,
                 **_sched({"a_in": R + T, "b_in": R + T + 1 if gain else R + 2 * T}, R + T + 1 if gain else R + 2 * T))
    ypop = _proc(f"y{layer}", "IFPopulation", tag, "y population: H*N IF neurons", {"a_in": hn, "s_out": hn},
                 layer=layer, pop="y", neurons=d.H * d.N, theta=f"{low.tables}theta_y", shifts=f"{low.tables}W_y_shift",
                 shift_add_frac=gain and low.integer, **_sched({"a_in": R + T + 1}, R + 2 * T))
    procs += [gate, ypop] if gain else [ypop, gate]
    procs += [
        _projection(net, low, f"dec{layer}", "decoder", "(hn)d->T", d.D, d.H * d.N, "decoder: gated y -> residual",
                    layer=layer),
        _proc(f"res{layer}", "Residual", tag, "x' = LN(x + LN(m))", {"x_in": D, "m_in": D, "x_out": D},
              layer=layer, neurons=d.D, **_sched({"x_in": R, "m_in": R + 2 * T + 1}, R + 2 * T + 1)),
    ]
    y_src = f"y{layer}.s_out"
    conns = [(x_in, f"E{layer}.s_in"), (f"E{layer}.a_out", f"x{layer}.a_in"), (x_in, f"plastic{layer}.x_in"),
             (f"x{layer}.s_out", f"plastic{layer}.a_in"), (f"plastic{layer}.u_out", f"ln_u{layer}.x_in"),
             (f"ln_u{layer}.x_out", f"Ev{layer}.s_in"), (f"x{layer}.s_out", f"gate{layer}.a_in"),
             (x_in, f"res{layer}.x_in"), (f"dec{layer}.a_out", f"res{layer}.m_in")]
    if gain:
        conns += [(f"Ev{layer}.a_out", f"gate{layer}.b_in"), (f"gate{layer}.s_out", f"y{layer}.a_in"),
                  (y_src, f"dec{layer}.s_in")]
    else:
        conns += [(f"Ev{layer}.a_out", f"y{layer}.a_in"), (y_src, f"gate{layer}.b_in"),
                  (f"gate{layer}.s_out", f"dec{layer}.s_in")]
    return procs, conns


def make_explicit_spec(net, settings: SimSettings, plasticity: Plasticity | None = None) -> dict:
    """The explicit graph's description; with the network file all that is needed to rebuild it."""
    low = lowering(settings.mode)
    check_lowerable(net, settings.mode)
    d, T, tag = net.dims, settings.timesteps, low.tag
    first_logits = 3 + d.L * (2 * T + 1)
    procs = [_proc("source", "lava.proc.io.source.RingBuffer", tag, "token input spikes", {"s_out": "B*V"},
                   neurons=0),
             _projection(net, low, "embed", "embed", "embed", d.D, d.V, "embedding: input spike -> graded row"),
             _proc("ln_in", "LayerNorm", tag, "LayerNorm of the embedding (layer 0's input)",
                   {"x_in": "B*D", "x_out": "B*D"}, neurons=d.D, groups="B", **_sched({"x_in": 2}, 2))]
    conns = [("source.s_out", "embed.s_in"), ("embed.a_out", "ln_in.x_in")]
    for layer in range(d.L):
        p, c = _layer(net, low, settings, layer)
        procs += p
        conns += c
    procs += [_projection(net, low, "lm_head", "lm_head", "lm_head", d.V, d.D, "readout: residual -> logits"),
              _proc("sink", "LogitSink", tag, "keeps each token's logits", {"a_in": "B*V"}, neurons=0,
                    first_step=first_logits)]
    conns += [(f"res{d.L - 1}.x_out", "lm_head.s_in"), ("lm_head.a_out", "sink.a_in")]
    spec = {
        "format": GRAPH_FORMAT, "format_version": GRAPH_VERSION, "graph": "explicit", "network": NETWORK_FILE,
        "settings": {"timesteps": T, "coding": settings.coding, "max_spikes": settings.max_spikes,
                     "mode": settings.mode},
        "plasticity": dataclasses.asdict(plasticity or Plasticity()),
        "gating": net.gating, "v_init": net.v_init, "dims": d.as_dict(),
        "lava": {"version": _lava_version(), "run_cfg": low.run_cfg,
                 "batch": "B sequences side by side: ports (B*size,), projection weights kron(eye(B), W)"},
        "schedule": {"period_steps_per_token": T, "layer_latency_steps": 2 * T + 1, "dense_delay_steps": 1,
                     "layer_input_steps": [2 + layer * (2 * T + 1) for layer in range(d.L)],
                     "logits_step": f"{first_logits} + t*{T}",
                     "total_steps": f"3 + L*(2T+1) + (n-1)*T = {first_logits - T} + n*{T}",
                     "fused_period_steps_per_token": 2 * T},
        "processes": procs,
        "connections": [{"from": a, "to": b} for a, b in conns],
        "classes": _classes(procs),
    }
    if low.integer:
        q = net.quantization
        spec["quantization"] = {"params": q.format.as_dict(), "lm_shift": q.lm_shift,
                                "logit_scale_exp": q.logit_scale_exp, "v0": q.v0}
    return spec


def _classes(procs) -> dict:
    """Which classes are Lava's (imported from lava.proc) and which ours (with both ProcessModels)."""
    lava = sorted({p["class"] for p in procs if p["origin"] == "lava"})
    ours = sorted({p["class"] for p in procs if p["origin"] != "lava"})
    return {"lava": lava, "ours": {c: [our_model(c.rsplit(".", 1)[1], t) for t in ("floating_pt", "fixed_pt")]
                                   for c in ours}}
