"""Building the explicit graph's Processes from its spec (explicit_spec.py) for a batch of token
ids, and the run configuration naming every ProcessModel."""

from __future__ import annotations

import importlib

import numpy as np
import scipy.sparse
from scipy.linalg import block_diag

from ...errors import NetworkFormatError
from .build import GraphInput, integer_math, lowered_arrays, oscillator_phases, sink_process, source_process
from .explicit_processes import Gate, IFPopulation, LayerNorm, PlasticSynapses, Projection, Residual
from .processes import LogitSink
from .spec import lowering

_CLASSES = {"IFPopulation": IFPopulation, "PlasticSynapses": PlasticSynapses, "LayerNorm": LayerNorm,
            "Gate": Gate, "Residual": Residual, "Projection": Projection, "LogitSink": LogitSink}
SAT_WIDTH = 12


def projection_weights(arrays: dict, entry: dict, sparse: bool = False):
    """The (out, in) matrix of a projection, for one sequence, from the network's arrays (the
    block-diagonal E_v as a scipy CSR matrix when ``sparse``)."""
    W = np.asarray(arrays[entry["weights"]])
    layout = entry["layout"]
    if layout in ("embed", "lm_head", "(hn)d->T"):
        return W.T
    W = W[entry["layer"]]  # H,D,N
    H, D, N = W.shape
    if layout == "hdn->(hn)d":
        return W.transpose(0, 2, 1).reshape(H * N, D)
    if layout == "hdn->blockdiag_h((hn)(hd))":
        if sparse:
            return scipy.sparse.block_diag([W[h].T for h in range(H)], format="csr")
        return block_diag(*[W[h].T for h in range(H)])
    raise NetworkFormatError(f"unknown projection layout {layout!r} in the Lava graph description")


def _projection(spec, entry, given: GraphInput):
    from lava.proc.dense.process import Dense
    from lava.proc.sparse.process import Sparse

    if entry["class"].endswith(".Sparse"):  # floating point only (explicit_spec)
        W = projection_weights(given.arrays, entry, sparse=True)
        W = scipy.sparse.kron(scipy.sparse.identity(given.ids.shape[0]), W, format="csr")
        return Sparse(weights=W, num_message_bits=entry["num_message_bits"], name=entry["name"])
    W = projection_weights(given.arrays, entry)
    W = np.kron(np.eye(given.ids.shape[0], dtype=W.dtype), W)
    if entry["class"].endswith(".Projection"):
        return Projection(weights=W, name=entry["name"])
    if not given.low.integer:
        return Dense(weights=W, num_message_bits=entry["num_message_bits"], name=entry["name"])
    return Dense(weights=2 * W, num_message_bits=entry["num_message_bits"], weight_exp=entry["weight_exp"],
                 num_weight_bits=entry["num_weight_bits"], name=entry["name"])


def _common(spec, entry, given: GraphInput, buffers: dict) -> dict:
    n_tokens = given.ids.shape[1]
    sat = {"sat": (n_tokens, SAT_WIDTH)} if given.low.integer else {}
    path = given.buffers(f"{entry['name']}_", {**buffers, **sat})
    return dict(arrive=entry["arrive"], send=entry["send"], period=spec["schedule"]["period_steps_per_token"],
                n_tokens=n_tokens, settings={k: spec["settings"][k] for k in ("timesteps", "coding", "max_spikes")},
                gating=spec["gating"], record_path=path,
                integer=integer_math(given.net, spec["settings"]) if given.low.integer else None, name=entry["name"])


def _scheduled(spec, entry, given: GraphInput):
    kind = entry["class"].rsplit(".", 1)[1]
    batch, n_tokens = given.ids.shape
    d = spec["dims"]
    pop_shape = (n_tokens, batch, d["H"], d["N"])
    if kind == "IFPopulation":
        layer = entry["layer"]
        shifts = np.asarray(given.arrays[entry["shifts"]][layer])
        if entry.get("shift_add_frac"):
            shifts = shifts + given.net.quantization.format.frac_bits
        kw = _common(spec, entry, given, {"counts": pop_shape, "margins": pop_shape, "decoded": pop_shape})
        return IFPopulation(batch=batch, theta=np.ascontiguousarray(given.arrays[entry["theta"]][layer]),
                            shifts=np.ascontiguousarray(shifts), pop=entry["pop"], v_init=spec["v_init"], **kw)
    if kind == "PlasticSynapses":
        cos, sin = oscillator_phases(given.net, given.low, n_tokens)
        kw = _common(spec, entry, given, {"q": pop_shape, "S": (batch, d["H"], d["D"], d["N"])})
        return PlasticSynapses(batch=batch, heads=d["H"], dim=d["D"], neurons=d["N"], cos=cos, sin=sin,
                               plasticity=spec["plasticity"], **kw)
    if kind == "LayerNorm":
        rows = batch * (d["H"] if entry["groups"] == "B*H" else 1)
        return LayerNorm(rows=rows, dim=d["D"], **_common(spec, entry, given, {}))
    if kind == "Gate":
        g = {} if spec["gating"] == "gain" else {"g": pop_shape}
        return Gate(size=batch * d["H"] * d["N"], **_common(spec, entry, given, g))
    if kind == "Residual":
        return Residual(batch=batch, dim=d["D"], **_common(spec, entry, given, {}))
    raise NetworkFormatError(f"unknown process class {entry['class']!r} in the Lava graph description")


def build_explicit(net, spec: dict, ids: np.ndarray, record_dir: str) -> dict:
    """The explicit graph's Processes for token ids (B, n), connected; every scheduled process
    writes its records to .npy buffers in ``record_dir``."""
    low = lowering(spec["settings"]["mode"])
    given = GraphInput(net, low, lowered_arrays(net, low), ids, (), record_dir)
    procs = {}
    for entry in spec["processes"]:
        if entry["name"] == "source":
            procs["source"] = source_process(spec, entry, given)
        elif entry["name"] == "sink":
            procs["sink"] = sink_process(spec, entry, given)
        elif "layout" in entry:
            procs[entry["name"]] = _projection(spec, entry, given)
        else:
            procs[entry["name"]] = _scheduled(spec, entry, given)
    for c in spec["connections"]:
        (sp, sport), (dp, dport) = c["from"].split("."), c["to"].split(".")
        getattr(procs[sp], sport).connect(getattr(procs[dp], dport))
    return procs


def _model(path: str):
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def explicit_run_cfg(spec: dict, procs: dict):
    """Loihi2SimCfg with the mode's tag and every process's ProcessModel named (as the spec says)."""
    from lava.magma.core.run_configs import Loihi2SimCfg

    low = lowering(spec["settings"]["mode"])
    models = {}
    for entry in spec["processes"]:
        proc = procs[entry["name"]]
        models[type(proc)] = models[proc] = _model(entry["model"])
    return Loihi2SimCfg(select_tag=low.tag, exception_proc_model_map=models)
