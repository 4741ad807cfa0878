"""Evaluation across processes with torch.distributed (``torchrun``): the evaluation sequences are
split across ranks, each rank simulates its own rows, and the results are gathered so that every
rank holds the whole run (numbers identical to one process: each sequence runs on exactly one
rank, sequences are independent). Only rank 0 prints and writes files (``quiet_unless_main``).

    torchrun --nproc_per_node=2 $(which bdh-convert) --backend snntorch --tokens 64

Process group: gloo on the CPU, NCCL when the device is CUDA (one GPU per rank, ``LOCAL_RANK``);
``BDH_SPIKING_DIST_BACKEND=gloo|nccl`` overrides. Started when torchrun's ``WORLD_SIZE`` > 1 is in
the environment, never otherwise (a plain run is unchanged). Every rank must hold the same
network: ``on_main_then_broadcast`` builds it on rank 0 and sends it to the others.
"""

from __future__ import annotations

import os
import sys

import torch

from .errors import BDHError, ConfigError


class RankError(BDHError):
    """A rank failed: every rank raises it, with the failing rank's one-line error."""


def requested_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if active() else 0


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def setup(device="cpu") -> int:
    """Starts the process group when launched by torchrun with more than one process; returns the
    world size (1: nothing started). NCCL needs CUDA: refused in one line without it."""
    import torch.distributed as dist

    if requested_world_size() <= 1 or (dist.is_available() and dist.is_initialized()):
        return world_size()
    cuda = str(device).startswith("cuda")
    backend = os.environ.get("BDH_SPIKING_DIST_BACKEND", "nccl" if cuda else "gloo")
    if backend not in ("gloo", "nccl"):
        raise ConfigError(f"BDH_SPIKING_DIST_BACKEND must be gloo or nccl, got {backend!r}")
    if backend == "nccl" and not torch.cuda.is_available():
        raise ConfigError("the NCCL process group needs CUDA GPUs and none is available: use gloo "
                          "(BDH_SPIKING_DIST_BACKEND=gloo, device cpu)")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return world_size()


def quiet_unless_main() -> None:
    """Ranks other than 0 print nothing (their stdout and stderr go to the null device)."""
    if not is_main():
        sys.stdout = open(os.devnull, "w")
        sys.stderr = open(os.devnull, "w")


def _share(payload, ok: bool):
    """Every rank's (ok, payload); raises RankError on every rank if any rank failed."""
    import torch.distributed as dist

    out = [None] * world_size()
    dist.all_gather_object(out, (ok, payload))
    for r, (good, what) in enumerate(out):
        if not good:
            raise RankError(what if what.startswith("rank ") else f"rank {r}: {what}")
    return [what for _, what in out]


def _message(exc: Exception) -> str:
    return str(exc) if isinstance(exc, BDHError) else f"{type(exc).__name__}: {exc}"


def on_main_then_broadcast(build):
    """``build()`` on rank 0, its value sent to every rank (pickled; e.g. model, network, ids): all
    ranks hold the same network. An error on rank 0 is raised on every rank."""
    if not active():
        return build()
    import torch.distributed as dist

    box = [None]
    if is_main():
        try:
            box[0] = (True, build())
        except Exception as exc:  # noqa: BLE001 - sent to every rank, then raised there
            box[0] = (False, f"rank 0: {_message(exc)}")
    dist.broadcast_object_list(box, src=0)
    ok, value = box[0]
    if not ok:
        raise RankError(value)
    return value


def shard_rows(n_rows: int, world: int, r: int) -> slice:
    """The contiguous rows of rank r of world (the first n_rows % world ranks get one more)."""
    if n_rows < world:
        raise ConfigError(f"{world} ranks but only {n_rows} sequences to evaluate: use at most {n_rows} "
                          "processes (torchrun --nproc_per_node) or more sequences")
    base, extra = divmod(n_rows, world)
    start = r * base + min(r, extra)
    return slice(start, start + base + (1 if r < extra else 0))


def _cpu(result):
    result.logits = result.logits.cpu()
    result.stats = {k: v.cpu() for k, v in result.stats.items()}
    result.records = {k: v.cpu() for k, v in result.records.items()}
    return result


def merge_results(parts: list, net, settings):
    """One SimulationResult from the ranks' results over consecutive rows (sequences): logits,
    statistics and per-neuron records concatenated along the batch, events recomputed from the
    merged statistics (the same function as one process), integer extras (saturations) summed."""
    from .semantics.events import event_counts

    first = parts[0]
    cat = {"state": 1}  # (L, B, H, D, N); every other record is batch-first
    records = {k: torch.cat([p.records[k] for p in parts], cat.get(k, 0)) for k in first.records}
    stats = {k: torch.cat([p.stats[k] for p in parts], 0) for k in first.stats}
    events = event_counts(stats, net, settings)
    for key, value in first.events.items():
        if key in events:
            continue
        if isinstance(value, dict):
            events[key] = {k: sum(p.events[key][k] for p in parts) for k in value}
        else:
            events[key] = sum(p.events[key] for p in parts)
    merged = type(first)(logits=torch.cat([p.logits for p in parts], 0), stats=stats, records=records,
                         backend=first.backend, settings=dict(first.settings), wall_s=max(p.wall_s for p in parts),
                         events=events)
    merged.settings["world_size"] = len(parts)
    return merged


def simulate_sharded(net, ids, run=None, **kw):
    """``run(net, ids, **kw)`` (default ``backends.simulate``), split by rows across the ranks when
    running under torchrun (started here if need be); the gathered result on every rank. One
    process: unchanged."""
    from .backends import simulate
    from .semantics import SimSettings

    simulate = run or simulate

    setup(kw.get("device", "cpu"))
    if not active():
        return simulate(net, ids, **kw)
    ids = torch.as_tensor(ids, dtype=torch.int64)
    ids = ids[None] if ids.dim() == 1 else ids
    try:
        rows = shard_rows(int(ids.shape[0]), world_size(), rank())
        ok, payload = True, _cpu(simulate(net, ids[rows], **kw))
    except Exception as exc:  # noqa: BLE001 - every rank raises the failing rank's error
        ok, payload = False, _message(exc)
    parts = _share(payload, ok)
    settings = SimSettings(timesteps=kw.get("timesteps", 8), coding=kw.get("coding", "multispike"),
                           max_spikes=kw.get("max_spikes", 4), mode=kw.get("mode", "discrete"))
    return merge_results(parts, net, settings)


def start_cli(args, device, outputs=("json", "plots", "save", "save_lava", "export_nir", "generate")) -> int:
    """For a CLI under torchrun: starts the process group, silences ranks other than 0 and clears
    their file outputs (the attributes named in ``outputs``), so that only rank 0 prints and
    writes; every rank still runs every collective step. Returns the world size."""
    world = setup(device)
    if world > 1 and not is_main():
        quiet_unless_main()
        for name in outputs:
            if hasattr(args, name):
                setattr(args, name, None)
    return world


def wall_time_note() -> dict:
    """What a report's meta says about the processes: world size and the process-group backend."""
    import torch.distributed as dist

    return {"world_size": world_size(), "process_group": dist.get_backend() if active() else None}
