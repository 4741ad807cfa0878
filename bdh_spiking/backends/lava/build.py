"""Building the Lava Processes of a spec for a batch of token ids, and the run configuration that
names their ProcessModels. One path for both modes: the mode's differences are the spec's
``Lowering`` (models, array names) and the arrays ``lowered_arrays`` gives."""

from __future__ import annotations

import dataclasses
import importlib
import os

import numpy as np
import torch

from ...errors import NetworkFormatError
from ...semantics import SimSettings, fold_weights, oscillator_cos_sin
from ...semantics.fixed_point import IntegerLayerMath, oscillator_table
from .processes import BDHLayer, LogitSink, record_shapes
from .spec import Lowering, lowering, total_steps


def lowered_arrays(net, low: Lowering) -> dict:
    """The arrays the graph is made of: float64 weights with thresholds folded in (floating point,
    no shifts), or the quantization's int64 tables (fixed point), named as ``low.tables`` says."""
    if low.integer:
        return net.quantization.int_tables()
    w = {k: v.numpy() for k, v in fold_weights(net, "cpu", torch.float64).items()}
    no_shift = np.zeros(w["theta_x"].shape)
    return {**w, "W_x_shift": no_shift, "W_y_shift": no_shift}


def oscillator_phases(net, low: Lowering, n_tokens: int):
    """cos, sin (n_tokens, N) of every token position: the official float32 phases as float64, or
    their integer tables with frac_bits fraction bits."""
    if low.integer:
        return oscillator_table(net.arrays["freqs"], n_tokens, net.quantization.format.frac_bits)
    cos, sin = oscillator_cos_sin(torch.as_tensor(net.arrays["freqs"], dtype=torch.float32), torch.arange(n_tokens))
    return cos.double().numpy(), sin.double().numpy()


def integer_math(net, settings: dict) -> dict:
    """The fields of the layer's ``IntegerLayerMath`` (its proc_params in fixed point)."""
    math = IntegerLayerMath.of(net.quantization, SimSettings(**settings), net.gating, net.dims.D, sat=None)
    return {f.name: getattr(math, f.name) for f in dataclasses.fields(math) if f.name not in ("sat", "layer")}


@dataclasses.dataclass
class GraphInput:
    """What a build needs besides the spec: the network's arrays for this mode, token ids (B, n),
    what to record and where the host-shared buffers go."""

    net: object
    low: Lowering
    arrays: dict
    ids: np.ndarray
    record: tuple
    record_dir: str

    def buffers(self, prefix: str, shapes: dict) -> str:
        """Creates the float64 .npy buffers ``prefix + key`` (memory-mapped by the models)."""
        for key, shape in shapes.items():
            np.lib.format.open_memmap(os.path.join(self.record_dir, f"{prefix}{key}.npy"), mode="w+",
                                      dtype=np.float64, shape=shape).flush()
        return os.path.join(self.record_dir, prefix)


def build(net, spec: dict, ids: np.ndarray, record=(), record_dir: str = "") -> dict:
    """The Lava Processes of ``spec`` for token ids (B, n), connected. Records go to .npy buffers
    in ``record_dir`` (created here, memory-mapped by the process models)."""
    low = lowering(spec["settings"]["mode"])
    given = GraphInput(net, low, lowered_arrays(net, low), ids, tuple(record), record_dir)
    makers = {"source": source_process, "embed": _dense, "readout": _dense, "sink": sink_process}
    procs = {}
    for entry in spec["processes"]:
        name = entry["name"]
        maker = _layer if name.startswith("layer") else makers.get(name)
        if maker is None:
            raise NetworkFormatError(f"unknown process {name!r} in the Lava graph description")
        procs[name] = maker(spec, entry, given)
    for c in spec["connections"]:
        (sp, sport), (dp, dport) = c["from"].split("."), c["to"].split(".")
        getattr(procs[sp], sport).connect(getattr(procs[dp], dport))
    return procs


def source_process(spec, entry, given: GraphInput):
    """Lava's RingBuffer sending one binary spike per token (both graphs)."""
    from lava.proc.io.source import RingBuffer as SourceBuffer

    batch, n_tokens = given.ids.shape
    vocab, period = spec["dims"]["V"], spec["schedule"]["period_steps_per_token"]
    data = np.zeros((batch * vocab, total_steps(spec, n_tokens)), dtype=np.int32 if given.low.integer else float)
    for t in range(n_tokens):
        data[np.arange(batch) * vocab + given.ids[:, t], t * period] = 1  # step 1 + t*period
    return SourceBuffer(data=data)


def _dense(spec, entry, given: GraphInput):
    """Lava's Dense, block-diagonal over the batch; in fixed point its weights are stored as twice
    the mantissa (Lava's mixed-sign 8-bit convention) with the spec's weight_exp."""
    from lava.proc.dense.process import Dense

    W = given.arrays[entry["weights"]]
    W = W.T if entry["transpose"] else W  # Lava's Dense wants (out, in)
    eye = np.eye(given.ids.shape[0], dtype=W.dtype)
    if not given.low.integer:
        return Dense(weights=np.kron(eye, W), num_message_bits=entry["num_message_bits"], name=entry["name"])
    return Dense(weights=np.kron(eye, 2 * W), num_message_bits=entry["num_message_bits"],
                 weight_exp=entry["weight_exp"], num_weight_bits=8, name=entry["name"])


def _layer(spec, entry, given: GraphInput):
    layer, name, low, arrays = entry["layer"], entry["name"], given.low, given.arrays
    batch, n_tokens = given.ids.shape
    d, settings = spec["dims"], spec["settings"]

    def table(key):
        return np.ascontiguousarray(arrays[f"{low.tables}{key}"][layer])

    cos, sin = oscillator_phases(given.net, low, n_tokens)
    shapes = record_shapes(n_tokens, batch, d["H"], d["N"], d["D"], given.record, low.integer)
    return BDHLayer(
        w_x=table("W_x"), w_y=table("W_y"),
        shift_x=table("W_x_shift"), shift_y=table("W_y_shift"), theta_x=table("theta_x"),
        theta_y=table("theta_y"), decoder=np.ascontiguousarray(arrays[f"{low.tables}decoder"]), cos=cos, sin=sin,
        batch=batch, timesteps=settings["timesteps"], coding=settings["coding"],
        max_spikes=settings["max_spikes"], v_init=spec["v_init"], gating=spec["gating"],
        offset=entry["offset"], period=spec["schedule"]["period_steps_per_token"], n_tokens=n_tokens,
        normalize_input=entry["normalize_input"], plasticity=spec["plasticity"], record=given.record,
        record_path=given.buffers(f"{name}_", shapes),
        integer=integer_math(given.net, settings) if low.integer else None, name=name)


def sink_process(spec, entry, given: GraphInput):
    """Our LogitSink, keeping each token's logits (both graphs)."""
    batch, n_tokens = given.ids.shape
    size = batch * spec["dims"]["V"]
    path = given.buffers("sink_", {"logits": (n_tokens, size)}) + "logits.npy"
    return LogitSink(size=size, path=path, first_step=entry["first_step"],
                     period=spec["schedule"]["period_steps_per_token"], n_tokens=n_tokens, name=entry["name"])


def _model(path: str):
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def run_cfg(spec: dict, procs: dict | None = None):
    """Loihi2SimCfg with the mode's tag and every ProcessModel named explicitly: keyed by class
    (what RunConfig.select reads) and by Process instance (what the compiler checks before it would
    scan the package directory for ProcessModels)."""
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer as SourceBuffer

    low = lowering(spec["settings"]["mode"])
    by_class = {BDHLayer: _model(low.layer_model), Dense: _model(low.dense_model),
                SourceBuffer: _model(low.source_model), LogitSink: _model(low.sink_model)}
    models = dict(by_class)
    for proc in (procs or {}).values():
        models[proc] = by_class[type(proc)]
    return Loihi2SimCfg(select_tag=low.tag, exception_proc_model_map=models)
