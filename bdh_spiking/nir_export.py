"""Export of the parts of a SpikingNetwork that NIR (the Neuromorphic Intermediate Representation)
can express, as a NIR graph file (HDF5, ``nir.write``).

NIR 1.0 has static projections (``Linear``, ``Affine``, ``Scale``) and neuron populations
(``IF``, ``LIF``, ...), but no plastic synapses, no product of two signals, no normalisation and no
per-token phase. So the exported graph holds:

- the static projections: embedding (a ``Linear`` from a one-hot input of V = 256 bytes), the
  encoder per layer and head with the folded weights ``W_x[l] = E / theta_x[l]``, the value
  encoder with ``W_y[l] = E_v / theta_y[l]`` (both exactly ``semantics.fold_weights``), the
  decoder per layer and head, and ``lm_head``;
- the x and y populations of every layer and head as ``nir.IF`` (r = 1, v_threshold = 1);

and every operation NIR cannot express is cut out: the graph gets an ``Output`` node where the
signal leaves the expressible part and an ``Input`` node where it comes back. **Every edge of
the exported graph is an exact data path of the network**; what sits between an ``Output`` and the
matching ``Input`` is listed, exactly, in the graph's ``metadata['lost']`` (and returned by
``export_nir``). No extension node types are written (a ``nir.NIRNode`` subclass could not be read
by ``nir.read`` or by any other tool).

Neuron semantics that NIR cannot state (also recorded in the metadata): NIR's ``IF`` is a
continuous-time integrator (dv/dt = R I) that resets to a fixed potential ``v_reset`` (written as
0), while bdh-spiking's IF neurons are discrete-time (one step = one of the token's T timesteps),
reset **by subtraction** (v = v - s), start every token at ``v = v_init`` (0.5), hold a constant
current for the T steps of a token, and in multispike/graded coding send more than one bit per
step. A simulator that imports the graph therefore does not reproduce the spike counts of
bdh-spiking's backends: the file carries the weights, the topology and the thresholds.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path

import numpy as np

from .errors import BackendUnavailable

FORMAT = "bdh-spiking NIR export"
FORMAT_VERSION = 1


def _import_nir():
    if importlib.util.find_spec("nir") is None:
        raise BackendUnavailable("NIR export needs the nir package: pip install 'bdh-spiking[nir]'")
    try:
        return importlib.import_module("nir")
    except ImportError as exc:  # broken install, or nir's own dependency (h5py) missing
        raise BackendUnavailable(f"NIR export could not import nir ({exc}): pip install 'bdh-spiking[nir]'") from None


def lost_parts(net, timesteps: int = 8) -> list[dict]:
    """What the NIR graph of ``net`` leaves out, one entry per missing operation or semantic.

    Each entry: ``part`` (short name), ``where`` (the Output -> Input cut of the graph that stands
    for it, or the nodes it concerns) and ``what`` (the operation, and why NIR cannot hold it).
    """
    gain = net.gating == "gain"
    lost = [
        {"part": "embedding_layernorm", "where": "embedding_out -> l0_residual",
         "what": "x0 = LN(embed[c]): LayerNorm without affine parameters (eps 1e-5) of the embedding row; "
                 "NIR has no normalisation node"},
        {"part": "x_decoding", "where": "l{l}_h{h}_x_spikes -> l{l}_h{h}_attn",
         "what": "decoded x activity a = count * theta_x / T over the token's T steps (a per-token sum of "
                 "spikes; NIR has no per-token accumulate-and-read node)"},
        {"part": "oscillator_payload", "where": "l{l}_h{h}_x_spikes -> l{l}_h{h}_attn",
         "what": "per-token phase of x-neuron pair (2k, 2k+1): phi = ((t * freqs[2k]) % 1) * 2 pi in float32, "
                 "payload q = R_t a (pair rotation); NIR has no per-token phase or rotation node. "
                 "The frequencies are stored in metadata['freqs']"},
        {"part": "hebbian_synapses", "where": "l{l}_h{h}_x_spikes -> l{l}_h{h}_attn",
         "what": "plastic synapses S[l] (H x D x N per layer, zero at sequence start): readout u_h = S_h q_h, "
                 "then the write S_h += x ⊗ q_h (read before write); decay/reset/freeze switches. "
                 "NIR has no plasticity"},
        {"part": "attention_layernorm", "where": "l{l}_h{h}_x_spikes -> l{l}_h{h}_attn",
         "what": "per-head LayerNorm of the plastic readout u_h before E_v; NIR has no normalisation node"},
    ]
    if gain:
        lost.append({"part": "gain_gating", "where": "l{l}_h{h}_z -> l{l}_h{h}_y_current",
                     "what": "gain gating: the y current is Jy = a ⊙ z (z = E_v output, a = decoded x activity "
                             "of the same token); NIR has no product of two signals (nir.Scale is a constant)"})
    else:
        lost.append({"part": "product_gating", "where": "l{l}_h{h}_y_spikes -> l{l}_h{h}_gated",
                     "what": "product gating: decoded y activity b = count * theta_y / T, then the product node "
                             "g = a ⊙ b; NIR has no per-token decoding or product of two signals"})
    lost += [
        {"part": "residual_and_layernorms", "where": "l{l}_decoder -> l{l+1}_residual (final_residual after "
                                                     "the last layer)",
         "what": "x^{l+1} = LN(x^l + LN(m)): the decoder sum m accumulated over the token's T steps, its "
                 "LayerNorm, the residual sum and the second LayerNorm; NIR has no normalisation node"},
        {"part": "reset_by_subtraction", "where": "every IF node",
         "what": "bdh-spiking resets by subtraction (v = v - s); NIR's IF resets to a fixed potential "
                 "(written v_reset = 0)"},
        {"part": "initial_potential", "where": "every IF node",
         "what": f"membranes start every token at v = v_init = {net.v_init} (0 in graded coding) and are reset "
                 "to it at every token boundary; NIR has no initial or per-token state"},
        {"part": "discrete_time", "where": "every IF node",
         "what": f"one bdh-spiking step is one of the token's T = {timesteps} timesteps, with the current held "
                 "constant over them (integrate, fire if v > 1, reset); NIR's IF is continuous-time "
                 "(dv/dt = R I), so the step size and the input hold are not part of the graph"},
        {"part": "multispike_and_graded_coding", "where": "every IF node",
         "what": "multispike coding (up to K spikes per step, v = v - s) and graded coding (payload max(v, 0), "
                 "v = 0) have no NIR neuron model; NIR's IF emits binary spikes (rate coding)"},
    ]
    if net.quantization is not None:
        lost.append({"part": "fixed_point_quantization", "where": "every Linear node",
                     "what": "the network is quantized (mode fixed-point: integer weights, shifts and thresholds in "
                             "net.quantization); the graph holds the float folded weights it was quantized from"})
    return lost


def build_graph(net, timesteps: int = 8, dtype=np.float64):
    """The NIR graph of ``net`` (nir.NIRGraph) and the lost-parts list."""
    nir = _import_nir()
    from . import __version__
    from .semantics import fold_weights

    if not isinstance(timesteps, int) or timesteps < 1:
        from .errors import ConfigError

        raise ConfigError(f"timesteps must be an integer >= 1, got {timesteps!r}")
    d = net.dims
    L, H, D, N, V = d.L, d.H, d.D, d.N, d.V
    w = {k: v.numpy() for k, v in fold_weights(net).items()}
    gain = net.gating == "gain"
    nodes, edges = {}, []

    def arr(a):
        return np.ascontiguousarray(np.asarray(a, dtype=dtype))

    def inp(name, size, note):
        nodes[name] = nir.Input(input_type={"input": np.array([size])}, metadata={"bdh_spiking": note})

    def out(name, size, note):
        nodes[name] = nir.Output(output_type={"output": np.array([size])}, metadata={"bdh_spiking": note})

    def linear(name, weight, note):  # weight: (out, in), NIR's convention
        nodes[name] = nir.Linear(weight=arr(weight), metadata={"bdh_spiking": note})

    def population(name, note):
        nodes[name] = nir.IF(r=np.ones(N, dtype=dtype), v_threshold=np.ones(N, dtype=dtype),
                             v_reset=np.zeros(N, dtype=dtype),
                             metadata={"bdh_spiking": note + "; threshold folded into the input weights (= 1); "
                                       f"bdh-spiking: discrete time, v0 = {net.v_init}, reset by subtraction"})

    inp("tokens", V, "one-hot byte of the token (V = 256)")
    linear("embedding", w["embed"].T, "embedding lookup as a Linear of the one-hot byte: weight = embed.T (D x V)")
    out("embedding_out", D, "embed[c], before LayerNorm (lost: embedding_layernorm)")
    edges += [("tokens", "embedding"), ("embedding", "embedding_out")]
    for l in range(L):
        inp(f"l{l}_residual", D, f"x^{l}: layer {l} input (graded, after LayerNorm)")
        out(f"l{l}_decoder", D, f"m: layer {l} decoder output, summed over heads (and over the token's T steps)")
        for h in range(H):
            p = f"l{l}_h{h}"
            rows = slice(h * N, (h + 1) * N)
            linear(f"{p}_E", w["W_x"][l, h].T, f"E folded: W_x[{l}][{h}].T = (E[{h}] / theta_x[{l}][{h}]).T (N x D)")
            population(f"{p}_x", f"x neurons, layer {l} head {h}")
            out(f"{p}_x_spikes", N, "x spikes (lost after here: x_decoding, oscillator_payload, hebbian_synapses, "
                                    "attention_layernorm)")
            inp(f"{p}_attn", D, f"LN(u_{h}): per-head LayerNorm of the plastic readout (graded)")
            linear(f"{p}_E_v", w["W_y"][l, h].T,
                   f"E_v folded: W_y[{l}][{h}].T = (E_v[{h}] / theta_y[{l}][{h}]).T (N x D)")
            population(f"{p}_y", f"y neurons, layer {l} head {h}")
            edges += [(f"l{l}_residual", f"{p}_E"), (f"{p}_E", f"{p}_x"), (f"{p}_x", f"{p}_x_spikes"),
                      (f"{p}_attn", f"{p}_E_v")]
            if gain:
                out(f"{p}_z", N, "z = LN(u) W_y (lost after here: gain_gating)")
                inp(f"{p}_y_current", N, "Jy = a ⊙ z (gain gating)")
                # a y spike decodes to theta_y / T of gated activity: fold that into the decoder
                dec = w["decoder"][rows] * (w["theta_y"][l, h][:, None] / timesteps)
                linear(f"{p}_D", dec.T, f"decoder rows of head {h}, each scaled by theta_y[{l}][{h}] / T "
                                        f"(T = {timesteps}): driven by y spikes (D x N)")
                edges += [(f"{p}_E_v", f"{p}_z"), (f"{p}_y_current", f"{p}_y"), (f"{p}_y", f"{p}_D"),
                          (f"{p}_D", f"l{l}_decoder")]
            else:
                out(f"{p}_y_spikes", N, "y spikes (lost after here: product_gating)")
                inp(f"{p}_gated", N, "g = a ⊙ b: product of decoded x and y activity (graded)")
                linear(f"{p}_D", w["decoder"][rows].T, f"decoder rows of head {h}, driven by g (D x N)")
                edges += [(f"{p}_E_v", f"{p}_y"), (f"{p}_y", f"{p}_y_spikes"), (f"{p}_gated", f"{p}_D"),
                          (f"{p}_D", f"l{l}_decoder")]
    inp("final_residual", D, f"x^{L}: output of the last layer (graded)")
    linear("lm_head", w["lm_head"].T, "lm_head.T (V x D): graded readout")
    out("logits", V, "logits (graded)")
    edges += [("final_residual", "lm_head"), ("lm_head", "logits")]

    lost = lost_parts(net, timesteps)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "bdh_spiking_version": __version__,
        "config": json.dumps(net.config, sort_keys=True),
        "gating": net.gating,
        "v_init": float(net.v_init),
        "timesteps_per_token": int(timesteps),
        "weight_dtype": np.dtype(dtype).name,
        "exact_edges": "every edge is an exact data path of the network; operations NIR cannot express are "
                       "cut out as Output -> Input pairs listed in 'lost'",
        "lost": {f"{i:02d}_{e['part']}": f"[{e['where']}] {e['what']}" for i, e in enumerate(lost)},
        "lost_json": json.dumps(lost),
        "freqs": np.asarray(net.arrays["freqs"], dtype=np.float32),
        "provenance": json.dumps(net.provenance, sort_keys=True, default=str),
    }
    graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)
    return graph, lost


def export_nir(net, path, timesteps: int = 8, dtype=np.float64, compression=None) -> dict:
    """Writes the NIR graph of ``net`` to ``path`` (HDF5, nir.write). Returns a summary dict:
    ``path``, ``nodes`` (count per NIR node type), ``edges``, ``bytes`` and ``lost`` (the list of
    what NIR cannot hold; also in the file, ``metadata['lost']`` / ``metadata['lost_json']``).

    Weights are written float64 by default (exactly ``semantics.fold_weights``); ``compression``
    is passed to nir.write (None: uncompressed, the fastest and the most portable).
    """
    nir = _import_nir()
    from .fileio import atomic_path

    graph, lost = build_graph(net, timesteps=timesteps, dtype=dtype)
    with atomic_path(path) as tmp:
        nir.write(tmp, graph, compression=compression)
    counts = {}
    for node in graph.nodes.values():
        counts[type(node).__name__] = counts.get(type(node).__name__, 0) + 1
    return {"path": str(path), "nodes": counts, "edges": len(graph.edges), "bytes": Path(path).stat().st_size,
            "timesteps": timesteps, "gating": net.gating, "lost": lost}


def subgraph(graph, names):
    """The nodes ``names`` of an exported graph and the edges between them, as a new NIRGraph
    (e.g. ``["l0_residual", "l0_h0_E", "l0_h0_x", "l0_h0_x_spikes"]``: one layer's E projection and
    x population, which snnTorch's and Norse's importers accept)."""
    nir = _import_nir()
    keep = list(names)
    missing = [n for n in keep if n not in graph.nodes]
    if missing:
        raise KeyError(f"not in the graph: {missing}")
    edges = [(a, b) for a, b in graph.edges if a in keep and b in keep]
    return nir.NIRGraph(nodes={n: graph.nodes[n] for n in keep}, edges=edges, metadata=dict(graph.metadata))


def format_lost(lost: list[dict]) -> str:
    """The lost-parts list, one line per part, for the console."""
    lines = ["NIR export: not representable in NIR (left out; recorded in the file's metadata['lost']):"]
    lines += [f"  - {e['part']} [{e['where']}]: {e['what']}" for e in lost]
    return "\n".join(lines)
