"""Running the fused Lava process graph (build, run, read back: one path for both modes) and the
helpers the explicit graph shares (``run_graph``, ``logits_per_token``). The backend's entry point,
saving and rebuilding are in api.py."""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import numpy as np
import torch

from ...semantics import EVENT_KEYS, SimSettings
from ...semantics.fixed_point import SAT_KEYS
from ..base import SimulationResult, make_result
from .build import build, run_cfg
from .processes import record_shapes
from .spec import lowering, total_steps

# -- build, run, read back ----------------------------------------------------------------
def execute(net, spec: dict, ids: torch.Tensor, record: tuple, progress: bool):
    """Builds the process graph for these token ids (B, n), runs it and reads back what its processes
    wrote to memory-mapped files: (logits (n, B*V), per-layer records, per-token stats)."""
    low = lowering(spec["settings"]["mode"])
    ids_np = ids.detach().cpu().numpy().astype(np.int64)
    batch, n_tokens = ids_np.shape
    d = spec["dims"]
    record_dir = tempfile.mkdtemp(prefix="bdh-lava-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
    try:
        procs = build(net, spec, ids_np, record, record_dir)
        run_graph(procs, spec, n_tokens, run_cfg(spec, procs), f"lava ({low.tag})", progress)

        def load(name):
            return np.load(os.path.join(record_dir, name))

        logits_np = load("sink_logits.npy")  # n, B*V
        shapes = record_shapes(n_tokens, batch, d["H"], d["N"], d["D"], record, low.integer)
        rec = {key: [load(f"layer{i}_{key}.npy") for i in range(d["L"])] for key in shapes}
    finally:
        shutil.rmtree(record_dir, ignore_errors=True)
    stats_np = np.sum(rec["stats"], axis=0)  # n,B,6 summed over layers
    stats = {k: torch.from_numpy(np.ascontiguousarray(stats_np[:, :, i].T)).to(torch.float64)
             for i, k in enumerate(EVENT_KEYS)}
    return logits_np, rec, stats


def _one_blas_thread():
    """Lava forks one OS process per Process; BLAS thread pools in each of them (OpenBLAS spins its
    idle threads) oversubscribe the cores many times over. The forked processes inherit the limit."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it the run is only slower
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def run_graph(procs, spec, n_tokens: int, cfg, desc: str, progress: bool) -> None:
    """Runs the built process graph for n tokens (one run call, or one per 64 tokens with a
    progress bar) and stops it; a failure to stop never masks the run's own error."""
    from lava.magma.core.run_conditions import RunSteps
    from ...progress import bar as tqdm

    steps = total_steps(spec, n_tokens)
    chunk = steps if not progress else spec["schedule"]["period_steps_per_token"] * 64
    sink = procs["sink"]
    finished = False
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the forked processes must not inherit a started OpenMP pool's thread count
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
        torch.set_num_threads(threads)
        try:
            sink.stop()
        except Exception:  # noqa: BLE001 - never mask the run's own error
            if finished:
                raise


def logits_per_token(logits_np: np.ndarray, n_tokens: int, batch: int, vocab: int) -> torch.Tensor:
    """The sink's (n tokens, B*V) buffer -> (B, n, V)."""
    return torch.from_numpy(np.ascontiguousarray(logits_np.reshape(n_tokens, batch, vocab).transpose(1, 0, 2)))


def read_records(rec: dict, record: tuple) -> dict:
    """The result records from the per-layer buffers the layer processes wrote."""

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


def saturations_per_layer(rec: dict) -> list:
    """Per layer, the saturations of every kind summed over tokens (fixed point)."""
    return [{key: int(round(v)) for key, v in zip(SAT_KEYS, layer.sum(axis=0))} for layer in rec["sat"]]


def run_spec(net, spec: dict, ids: torch.Tensor, record=(), progress: bool = False,
             how: str | None = None) -> SimulationResult:
    """Builds the graph described by ``spec`` for token ids (B, n), runs it, collects the result
    (fixed point: integer logits scaled by 2**logit_scale_exp, exactly; saturation counts)."""
    started = time.perf_counter()
    record = tuple(record)
    low = lowering(spec["settings"]["mode"])
    batch, n_tokens = ids.shape
    logits_np, rec, stats = execute(net, spec, ids, record, progress)
    logits = logits_per_token(logits_np, n_tokens, batch, spec["dims"]["V"])
    extra = {"lava_timesteps": total_steps(spec, n_tokens),
             "lava_timesteps_per_token": spec["schedule"]["period_steps_per_token"],
             "lava_processes": len(spec["processes"]), "run_cfg": spec["lava"]["run_cfg"]}
    if low.integer:
        logits = logits * 2.0 ** spec["quantization"]["logit_scale_exp"]
        extra["saturations_per_layer"] = saturations_per_layer(rec)
        if how is not None:
            extra["quantization"] = how
    result = make_result("lava", net, SimSettings(**spec["settings"]), logits, stats, read_records(rec, record),
                         started, "int64" if low.integer else "float64", "cpu", **extra)
    if low.integer:
        totals = {key: sum(layer[key] for layer in extra["saturations_per_layer"]) for key in SAT_KEYS}
        result.events["saturations"] = totals
        result.events["saturations_total"] = sum(totals.values())
    return result
