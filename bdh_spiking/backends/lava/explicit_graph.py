"""Running the explicit graph (explicit_spec.py): build, run, read back what each process wrote,
and assemble the same SimulationResult the fused graph gives."""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import numpy as np
import torch

from ...semantics import SimSettings, accumulate_stats, new_stats
from ...semantics.fixed_point import SAT_KEYS
from ..base import SimulationResult, make_result
from .explicit_build import build_explicit, explicit_run_cfg
from .graph import logits_per_token, run_graph
from .spec import lowering, total_steps


def _load_all(record_dir: str) -> dict:
    return {name[:-4]: np.load(os.path.join(record_dir, name)) for name in os.listdir(record_dir)
            if name.endswith(".npy")}


def _records(buf: dict, L: int, record: tuple) -> dict:
    """The result records (B, n, L, H, N) from the populations' and synapses' buffers."""

    def per_neuron(key):  # per layer (n,B,H,N) -> (B,n,L,H,N)
        return torch.from_numpy(np.ascontiguousarray(np.stack([buf[key.format(l=i)] for i in range(L)], axis=2)
                                                     .transpose(1, 0, 2, 3, 4)))

    out = {}
    if "counts" in record:
        out["x_counts"], out["y_counts"] = per_neuron("x{l}_counts"), per_neuron("y{l}_counts")
    if "margins" in record:
        out["x_margins"], out["y_margins"] = per_neuron("x{l}_margins"), per_neuron("y{l}_margins")
    if "decoded" in record:
        out["a_hat"] = per_neuron("x{l}_decoded")
        out["g_hat"] = per_neuron("gate{l}_g" if "gate0_g" in buf else "y{l}_decoded")
    if "state" in record:
        out["state"] = torch.from_numpy(np.stack([buf[f"plastic{i}_S"] for i in range(L)]))
    return out


def _stats(buf: dict, L: int, settings: SimSettings, batch: int, n_tokens: int) -> dict:
    stats = new_stats(batch, n_tokens)
    g_key = "gate{l}_g" if "gate0_g" in buf else "y{l}_decoded"
    for layer in range(L):
        cx, cy = torch.from_numpy(buf[f"x{layer}_counts"]), torch.from_numpy(buf[f"y{layer}_counts"])
        q, g = torch.from_numpy(buf[f"plastic{layer}_q"]), torch.from_numpy(buf[g_key.format(l=layer)])
        for t in range(n_tokens):
            accumulate_stats(stats, (slice(None), t), settings, cx[t], cy[t], q[t], g[t])
    return stats


def _saturations(buf: dict, spec: dict) -> list:
    """Per layer, saturations of every kind summed over the layer's processes and tokens."""
    per_layer = [{k: 0 for k in SAT_KEYS} for _ in range(spec["dims"]["L"])]
    for entry in spec["processes"]:
        key = f"{entry['name']}_sat"
        if key in buf:
            layer = entry.get("layer", 0)
            for k, v in zip(SAT_KEYS, buf[key].sum(axis=0)):
                per_layer[layer][k] += int(round(v))
    return per_layer


def run_explicit(net, spec: dict, ids: torch.Tensor, record=(), progress: bool = False,
                 how: str | None = None) -> SimulationResult:
    """Builds the explicit graph for token ids (B, n), runs it and collects the result."""
    started = time.perf_counter()
    record = tuple(record)
    low = lowering(spec["settings"]["mode"])
    ids_np = ids.detach().cpu().numpy().astype(np.int64)
    batch, n_tokens = ids_np.shape
    L = spec["dims"]["L"]
    record_dir = tempfile.mkdtemp(prefix="bdh-lava-x-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
    try:
        procs = build_explicit(net, spec, ids_np, record_dir)
        run_graph(procs, spec, n_tokens, explicit_run_cfg(spec, procs), f"lava explicit ({low.tag})", progress)
        buf = _load_all(record_dir)
    finally:
        shutil.rmtree(record_dir, ignore_errors=True)
    settings = SimSettings(**spec["settings"])
    logits = logits_per_token(buf["sink_logits"], n_tokens, batch, spec["dims"]["V"])
    extra = {"lava_graph": "explicit", "lava_timesteps": total_steps(spec, n_tokens),
             "lava_timesteps_per_token": spec["schedule"]["period_steps_per_token"],
             "lava_processes": len(spec["processes"]), "run_cfg": spec["lava"]["run_cfg"]}
    if low.integer:
        logits = logits * 2.0 ** spec["quantization"]["logit_scale_exp"]
        extra["saturations_per_layer"] = _saturations(buf, spec)
        if how is not None:
            extra["quantization"] = how
    result = make_result("lava", net, settings, logits, _stats(buf, L, settings, batch, n_tokens),
                         _records(buf, L, record), started, "int64" if low.integer else "float64", "cpu", **extra)
    if low.integer:
        totals = {key: sum(layer[key] for layer in extra["saturations_per_layer"]) for key in SAT_KEYS}
        result.events["saturations"] = totals
        result.events["saturations_total"] = sum(totals.values())
    return result
