"""The Lava process graph of a SpikingNetwork: its description (a JSON-able "spec"), the
schedule, building the Processes from the spec, running them, and saving/rebuilding.

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
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ...errors import ConfigError, NetworkFormatError
from ...fileio import atomic_write_text
from ...semantics import Plasticity, SimSettings, fold_weights, oscillator_cos_sin
from ..base import EVENT_KEYS, SimulationResult, event_counts

RECORDABLE = ("counts", "margins", "decoded", "state")
GRAPH_FORMAT = "bdh-spiking-lava-graph"
GRAPH_VERSION = 1
GRAPH_FILE = "lava_graph.json"
NETWORK_FILE = "network.bdhsnn"
OPTIONS = ("save_lava_dir",)


# -- the spec: processes, ports, connections, schedule ------------------------------------
def make_spec(net, settings: SimSettings, plasticity: Plasticity | None = None) -> dict:
    """A JSON-able description of the process graph; with the network file it is all that is
    needed to rebuild and run the graph (batch size and sequence length come with the input)."""
    p = plasticity or Plasticity()
    d = net.dims
    L, T = d["L"], settings.timesteps
    period, latency = 2 * T, 2 * T - 1
    procs = [{"name": "source", "origin": "lava", "class": "lava.proc.io.source.RingBuffer",
              "model": "lava.proc.io.source.PySendModelFloat", "role": "token input: one spike on the token's "
              "input line (one of V per sequence) at the token's first step", "ports": {"s_out": "B*V"}},
             {"name": "embed", "origin": "lava", "class": "lava.proc.dense.process.Dense",
              "model": "lava.proc.dense.models.PyDenseModelFloat", "weights": "embed", "transpose": True,
              "num_message_bits": 0, "delay_steps": 1, "role": "embedding: binary input spike -> graded embedding row",
              "ports": {"s_in": "B*V", "a_out": "B*D"}}]
    for layer in range(L):
        procs.append({"name": f"layer{layer}", "origin": "bdh_spiking", "layer": layer,
                      "class": "bdh_spiking.backends.lava_backend.processes.BDHLayer",
                      "model": "bdh_spiking.backends.lava_backend.models.PyBDHLayerModelFloat",
                      "weights": {"w_x": f"W_x[{layer}] = encoder / theta_x[{layer}] (semantics.fold_weights)",
                                  "w_y": f"W_y[{layer}] = encoder_v / theta_y[{layer}]",
                                  "theta_x": f"theta_x[{layer}]", "theta_y": f"theta_y[{layer}]",
                                  "decoder": "decoder", "cos/sin": "semantics.oscillator_cos_sin(freqs, t)"},
                      "normalize_input": layer == 0, "offset": 2 + layer * latency,
                      "role": "x population (H*N IF), plastic synapses S, LayerNorm, y population (H*N IF), "
                              f"{net.gating} gating, decoder and residual LayerNorms",
                      "ports": {"x_in": "B*D", "x_out": "B*D"}})
    procs += [{"name": "readout", "origin": "lava", "class": "lava.proc.dense.process.Dense",
               "model": "lava.proc.dense.models.PyDenseModelFloat", "weights": "lm_head", "transpose": True,
               "num_message_bits": 24, "delay_steps": 1, "role": "graded residual -> logits", "ports": {"s_in": "B*D", "a_out": "B*V"}},
              {"name": "sink", "origin": "bdh_spiking",
               "class": "bdh_spiking.backends.lava_backend.processes.LogitSink",
               "model": "bdh_spiking.backends.lava_backend.models.PyLogitSinkModelFloat",
               "first_step": 3 + L * latency, "role": "keeps the logits of each token's logits step (Lava's "
               "io.sink.RingBuffer would do, but Var.get() in Lava 0.10 moves one value per message)",
               "ports": {"a_in": "B*V"}}]
    chain = ["source.s_out", "embed.s_in", "embed.a_out"] + sum(
        [[f"layer{i}.x_in", f"layer{i}.x_out"] for i in range(L)], []) + ["readout.s_in", "readout.a_out", "sink.a_in"]
    conns = []
    for src, dst in zip(chain[0::2], chain[1::2]):
        conns.append({"from": src, "to": dst, "delay_steps": 0,
                      "note": "direct port connection (the Dense processes add their own step of delay)"})
    return {
        "format": GRAPH_FORMAT, "format_version": GRAPH_VERSION, "network": NETWORK_FILE,
        "settings": {"timesteps": T, "coding": settings.coding, "max_spikes": settings.max_spikes,
                     "mode": settings.mode},
        "plasticity": dataclasses.asdict(p),
        "gating": net.gating, "v_init": net.v_init, "dims": d,
        "lava": {"version": _lava_version(), "run_cfg": "Loihi2SimCfg(select_tag='floating_pt')",
                 "batch": "a batch of B sequences runs side by side: population Vars are (B, H, N), ports "
                          "(B*D,) / (B*V,), Dense weights block-diagonal kron(eye(B), W)"},
        "schedule": {
            "period_steps_per_token": period, "layer_latency_steps": latency,
            "dense_delay_steps": 1,
            "source_spike_step": "1 + t*period",
            "layer_first_step": "offset_l + t*period, offset_l = 2 + l*(2T-1)",
            "layer_offsets": [2 + layer * latency for layer in range(L)],
            "x_steps": "offset_l + t*period + k, k = 0..T-1",
            "y_steps": "offset_l + t*period + T + k, k = 0..T-1",
            "logits_step": f"3 + t*period + L*(2T-1) = {3 + L * latency} + t*{period}",
            "total_steps": f"3 + (n-1)*period + L*(2T-1) = {3 + L * latency - period} + n*{period}",
        },
        "processes": procs,
        "connections": conns,
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


def logits_step(spec: dict, t: int) -> int:
    s = spec["schedule"]
    return 3 + t * s["period_steps_per_token"] + spec["dims"]["L"] * s["layer_latency_steps"]


# -- building the Lava processes from the spec -------------------------------------------
def build(net, spec: dict, ids: np.ndarray, record=(), record_dir: str | None = None) -> dict:
    """The Lava Processes of ``spec`` for token ids (B, n), connected. Records go to .npy buffers
    in ``record_dir`` (created here, memory-mapped by the process models)."""
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer as SourceBuffer

    from .processes import BDHLayer, LogitSink, record_shapes

    B, n = ids.shape
    d = spec["dims"]
    D, V = d["D"], d["V"]
    st = spec["settings"]
    pl = spec["plasticity"]
    T = st["timesteps"]
    period = spec["schedule"]["period_steps_per_token"]
    steps = total_steps(spec, n)
    w = {k: v.numpy() for k, v in fold_weights(net, "cpu", torch.float64).items()}
    cos, sin = oscillator_cos_sin(torch.as_tensor(net.arrays["freqs"], dtype=torch.float32), torch.arange(n))
    cos, sin = cos.double().numpy(), sin.double().numpy()
    eye = np.eye(B)
    if record_dir is None:
        record_dir = tempfile.mkdtemp(prefix="bdh-lava-")

    def buffers(prefix, shapes):
        for key, shape in shapes.items():
            np.lib.format.open_memmap(os.path.join(record_dir, f"{prefix}{key}.npy"), mode="w+",
                                      dtype=np.float64, shape=shape).flush()
        return os.path.join(record_dir, prefix)

    procs = {}
    for entry in spec["processes"]:
        name, cls = entry["name"], entry["class"]
        if cls.endswith("source.RingBuffer"):
            data = np.zeros((B * V, steps))
            for t in range(n):
                data[np.arange(B) * V + ids[:, t], t * period] = 1.0  # step 1 + t*period
            procs[name] = SourceBuffer(data=data)
        elif cls.endswith("Dense"):
            W = w[entry["weights"]]
            W = W.T if entry["transpose"] else W  # Lava's Dense wants (out, in)
            procs[name] = Dense(weights=np.kron(eye, W), num_message_bits=entry["num_message_bits"], name=name)
        elif cls.endswith("BDHLayer"):
            layer = entry["layer"]
            Wx = w["W_x"][layer]  # H,D,N
            H, _, N = Wx.shape
            decay = 1.0 if pl["decay_tau_tokens"] is None else Plasticity(**pl).decay
            procs[name] = BDHLayer(
                w_x=np.ascontiguousarray(Wx.transpose(1, 0, 2).reshape(D, H * N)),
                w_y=np.ascontiguousarray(w["W_y"][layer]), theta_x=w["theta_x"][layer].copy(),
                theta_y=w["theta_y"][layer].copy(), decoder=w["decoder"].copy(), cos=cos, sin=sin, batch=B,
                timesteps=T, coding=st["coding"], max_spikes=st["max_spikes"], v_init=spec["v_init"],
                gating=spec["gating"], offset=entry["offset"], period=period, n_tokens=n,
                normalize_input=entry["normalize_input"],
                freeze_after=-1 if pl["freeze_after"] is None else int(pl["freeze_after"]),
                reset_every=0 if pl["reset_every"] is None else int(pl["reset_every"]), decay=decay,
                record_path=buffers(f"{name}_", record_shapes(n, B, H, N, D, "decoded" in record,
                                                              "margins" in record, "state" in record)),
                record_decoded="decoded" in record, record_margins="margins" in record,
                record_state="state" in record, name=name)
        elif cls.endswith("LogitSink"):
            path = buffers(f"{name}_", {"logits": (n, B * V)}) + "logits.npy"
            procs[name] = LogitSink(size=B * V, path=path, first_step=entry["first_step"], period=period,
                                    n_tokens=n, name=name)
        else:
            raise NetworkFormatError(f"unknown process class {cls!r} in the Lava graph description")
    for c in spec["connections"]:
        (sp, sport), (dp, dport) = c["from"].split("."), c["to"].split(".")
        getattr(procs[sp], sport).connect(getattr(procs[dp], dport))
    return procs


def run_cfg(procs: dict | None = None):
    """Loihi2SimCfg(select_tag='floating_pt') with our models named explicitly: keyed by class (what
    RunConfig.select reads) and by Process instance (what the compiler checks before it would scan
    the package directory for ProcessModels)."""
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.models import PyDenseModelFloat
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import PySendModelFloat
    from lava.proc.io.source import RingBuffer as SourceBuffer

    from .models import PyBDHLayerModelFloat, PyLogitSinkModelFloat
    from .processes import BDHLayer, LogitSink

    by_class = {BDHLayer: PyBDHLayerModelFloat, Dense: PyDenseModelFloat, SourceBuffer: PySendModelFloat,
                LogitSink: PyLogitSinkModelFloat}
    models = dict(by_class)
    for proc in (procs or {}).values():
        models[proc] = by_class[type(proc)]
    return Loihi2SimCfg(select_tag="floating_pt", exception_proc_model_map=models)


def execute(net, spec: dict, ids: torch.Tensor, record: tuple, build_fn, cfg_fn, shapes_fn, desc: str,
            progress: bool):
    """Builds the process graph for these token ids (B, n), runs it and reads back what its processes
    wrote to memory-mapped files: (B, n, logits (n, B*V), per-layer records, per-token stats)."""
    unknown = set(record) - set(RECORDABLE)
    if unknown:
        raise ConfigError(f"cannot record {sorted(unknown)}: choose from {', '.join(RECORDABLE)}")
    ids_np = ids.detach().cpu().numpy().astype(np.int64)
    B, n = ids_np.shape
    d = spec["dims"]
    record_dir = tempfile.mkdtemp(prefix="bdh-lava-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
    try:
        procs = build_fn(net, spec, ids_np, record, record_dir)
        run_graph(procs, spec, n, cfg_fn(procs), desc, progress)

        def load(name):
            return np.load(os.path.join(record_dir, name))

        logits_np = load("sink_logits.npy")  # n, B*V
        rec = {key: [load(f"layer{i}_{key}.npy") for i in range(d["L"])] for key in
               shapes_fn(n, B, d["H"], d["N"], d["D"], "decoded" in record, "margins" in record, "state" in record)}
    finally:
        shutil.rmtree(record_dir, ignore_errors=True)
    stats_np = np.sum(rec["stats"], axis=0)  # n,B,6 summed over layers
    stats = {k: torch.from_numpy(np.ascontiguousarray(stats_np[:, :, i].T)).to(torch.float64)
             for i, k in enumerate(EVENT_KEYS)}
    return B, n, logits_np, rec, stats


def logits_per_token(logits_np: np.ndarray, n: int, B: int, V: int) -> torch.Tensor:
    """The sink's (n tokens, B*V) buffer -> (B, n, V)."""
    return torch.from_numpy(np.ascontiguousarray(logits_np.reshape(n, B, V).transpose(1, 0, 2)))


def read_records(rec: dict, record: tuple) -> dict:
    """The result records from the per-layer buffers the layer processes wrote (both modes)."""

    def per_neuron(name):  # per layer (n,B,H,N) -> (B,n,L,H,N)
        return torch.from_numpy(np.ascontiguousarray(np.stack(rec[name], axis=2).transpose(1, 0, 2, 3, 4)))

    records = {}
    if "counts" in record:
        records["x_counts"], records["y_counts"] = per_neuron("x"), per_neuron("y")
    if "margins" in record:
        records["x_margins"], records["y_margins"] = per_neuron("mx"), per_neuron("my")
    if "decoded" in record:
        records["a_hat"], records["g_hat"] = per_neuron("a"), per_neuron("g")
    if "state" in record:
        records["state"] = torch.from_numpy(np.stack(rec["S"]))  # L,B,H,D,N fixed frame
    return records


def run_spec(net, spec: dict, ids: torch.Tensor, record=(), progress: bool = False) -> SimulationResult:
    """Builds the graph described by ``spec`` for these token ids, runs it, collects the result."""
    from .processes import record_shapes

    started = time.perf_counter()
    record = tuple(record)
    B, n, logits_np, rec, stats = execute(net, spec, ids, record, build, run_cfg, record_shapes, "lava", progress)
    logits = logits_per_token(logits_np, n, B, spec["dims"]["V"])
    records = read_records(rec, record)
    settings = SimSettings(timesteps=spec["settings"]["timesteps"], coding=spec["settings"]["coding"],
                           max_spikes=spec["settings"]["max_spikes"], mode=spec["settings"]["mode"])
    meta = {"timesteps": settings.timesteps, "coding": settings.coding, "max_spikes": settings.max_spikes,
            "mode": settings.mode, "gating": net.gating, "dtype": "float64", "device": "cpu",
            "lava_timesteps": total_steps(spec, ids.shape[1]),
            "lava_timesteps_per_token": spec["schedule"]["period_steps_per_token"],
            "lava_processes": len(spec["processes"]), "run_cfg": spec["lava"]["run_cfg"]}
    result = SimulationResult(logits=logits, stats=stats, records=records, backend="lava", settings=meta,
                              wall_s=time.perf_counter() - started)
    result.events = event_counts(stats, net, settings)
    return result


def _one_blas_thread():
    """Lava forks one OS process per Process; BLAS thread pools in each of them (OpenBLAS spins its
    idle threads) oversubscribe the cores many times over. The forked processes inherit the limit."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it the run is only slower
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


# -- the backend entry point ----------------------------------------------------------------
def run_graph(procs, spec, n: int, cfg, desc: str, progress: bool) -> None:
    """Runs the built process graph for n tokens (one run call, or one per 64 tokens with a
    progress bar) and stops it; a failure to stop never masks the run's own error."""
    from lava.magma.core.run_conditions import RunSteps
    from tqdm.auto import tqdm

    steps = total_steps(spec, n)
    chunk = steps if not progress else spec["schedule"]["period_steps_per_token"] * 64
    sink = procs["sink"]
    finished = False
    try:
        with _one_blas_thread(), tqdm(total=steps, desc=desc, unit="step", disable=not progress, leave=False) as bar:
            done = 0
            while done < steps:
                k = min(chunk, steps - done)
                sink.run(condition=RunSteps(num_steps=k, blocking=True), run_cfg=cfg)
                done += k
                bar.update(k)
        finished = True
    finally:
        try:
            sink.stop()
        except Exception:  # noqa: BLE001 - never mask the run's own error
            if finished:
                raise


def simulate(net, ids, settings, device="cpu", record=(), plasticity=None, dtype=torch.float64,
             progress=False, **options):
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise ConfigError(f"unknown option(s) {sorted(unknown)} for the lava backend: it accepts {', '.join(OPTIONS)}")
    if settings.mode not in ("discrete", "fixed-point"):
        raise ConfigError(f"the lava backend runs modes 'discrete' and 'fixed-point', not {settings.mode!r}")
    if str(device) != "cpu":
        raise ConfigError(f"the lava backend runs on Lava's CPU simulator only: use device 'cpu', not {str(device)!r}")
    if settings.mode == "fixed-point":  # integer ProcessModels, Loihi2SimCfg(select_tag='fixed_pt')
        from . import fixed_point

        return fixed_point.simulate(net, ids, settings, plasticity=plasticity, record=record, progress=progress,
                                    save_lava_dir=options.get("save_lava_dir"))
    if dtype != torch.float64:
        raise ConfigError(f"the lava backend's floating_pt models compute in float64, not {dtype}")
    plasticity = plasticity or Plasticity()
    spec = make_spec(net, settings, plasticity)
    if options.get("save_lava_dir"):
        save_process_graph(net, options["save_lava_dir"], settings, plasticity)
    ids = torch.as_tensor(ids, dtype=torch.int64)
    if ids.dim() == 1:
        ids = ids[None]
    return run_spec(net, spec, ids, record=record, progress=progress)


# -- saving and rebuilding -----------------------------------------------------------------
def save_process_graph(net, directory, settings: SimSettings | None = None,
                       plasticity: Plasticity | None = None) -> Path:
    """Writes ``network.bdhsnn`` (the network, no checkpoint needed) and ``lava_graph.json``
    (processes, ports, connections, schedule, settings) into ``directory``; returns the JSON path."""
    settings = (settings or SimSettings()).validate()
    if settings.mode not in ("discrete", "fixed-point"):
        raise ConfigError(f"the lava backend runs modes 'discrete' and 'fixed-point', not {settings.mode!r}")
    if settings.mode == "fixed-point":
        from ...conversion.quantize import ensure_quantized
        from .fixed_point import make_spec as make_spec_fixed

        net, _ = ensure_quantized(net)  # the saved network carries its integer tables
        spec = make_spec_fixed(net, settings, plasticity)
    else:
        spec = make_spec(net, settings, plasticity)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    net.save(directory / NETWORK_FILE)
    path = directory / GRAPH_FILE
    atomic_write_text(path, json.dumps(spec, indent=1) + "\n")
    return path


def load_process_graph(directory):
    """(net, spec) from a directory written by ``save_process_graph``."""
    from ...network import SpikingNetwork

    directory = Path(directory)
    path = directory / GRAPH_FILE
    if not path.is_file():
        raise NetworkFormatError(f"no Lava process graph in {directory} (missing {GRAPH_FILE})")
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise NetworkFormatError(f"corrupt Lava process graph {path}: {exc}") from None
    if spec.get("format") != GRAPH_FORMAT:
        raise NetworkFormatError(f"{path} is not a bdh-spiking Lava process graph")
    if not isinstance(spec.get("format_version"), int) or spec["format_version"] > GRAPH_VERSION:
        raise NetworkFormatError(f"{path} has Lava graph format version {spec.get('format_version')}, newer "
                                 f"than this bdh-spiking reads ({GRAPH_VERSION})")
    net = SpikingNetwork.load(directory / spec.get("network", NETWORK_FILE))
    if net.dims != spec["dims"] or net.gating != spec["gating"]:
        raise NetworkFormatError(f"{path} does not describe the network stored beside it")
    return net, spec


def simulate_saved(directory, ids, record=(), progress: bool = False) -> SimulationResult:
    """Rebuilds the saved process graph and runs it on token ids (T,) or (B, T)."""
    net, spec = load_process_graph(directory)
    ids = torch.as_tensor(ids, dtype=torch.int64)
    if ids.dim() == 1:
        ids = ids[None]
    if ids.dim() != 2 or ids.shape[1] == 0 or int(ids.min()) < 0 or int(ids.max()) >= net.dims["V"]:
        raise ConfigError(f"token ids must have shape (T,) or (B, T) with values in [0, {net.dims['V']})")
    if spec["settings"].get("mode") == "fixed-point":
        from .fixed_point import run_spec as run_spec_fixed

        return run_spec_fixed(net, spec, ids, record=record, progress=progress, how="saved quantized network")
    return run_spec(net, spec, ids, record=record, progress=progress)
