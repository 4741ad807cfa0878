"""Tokens/s of the explicit Lava graph vs the fused one, same run, same machine (Lava's CPU simulator).

    python benchmarks/bench_lava_graphs.py [--tokens 4] [--T 4] [--mode discrete|fixed-point]
        [--checkpoint CKPT --n-layer L] [--calibration-bytes 1024] [--graphs fused,explicit]

Without --checkpoint: the shipped default model. With it: any checkpoint bdh-convert loads, e.g.
an official-format one made with the official code (benchmarks/official_checkpoint.py; official
files store no layer count, hence --n-layer).

Each graph is timed end to end (build, fork one OS process per Lava Process, run, read back) and
the counts of both are compared (single-threaded torch) with the reference executor. The machine is printed with the table.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from pathlib import Path

import torch

import bdh_spiking as bs
from bdh_spiking.report import spike_differences

DATA = Path(bs.__file__).parent / "data"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=4)
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--mode", default="discrete")
    p.add_argument("--checkpoint", help="a dense checkpoint (default: the shipped default model)")
    p.add_argument("--n-layer", type=int, help="layer count of an official-format checkpoint")
    p.add_argument("--calibration-bytes", type=int, default=1024)
    p.add_argument("--graphs", default="fused,explicit")
    args = p.parse_args()
    # Lava forks one OS process per Process: forking after torch's OpenMP pool has started (a multi-threaded
    # reference run) deadlocks the children's first torch call, so everything here runs single-threaded.
    torch.set_num_threads(1)
    started = time.perf_counter()
    model = bs.load_model(args.checkpoint, n_layer=args.n_layer)
    net = bs.convert(model, gating="gain", calibration=(DATA / "calibration.txt").read_bytes()[:args.calibration_bytes])
    converted = time.perf_counter() - started
    ids = torch.tensor([list((DATA / "heldout.txt").read_bytes()[:args.tokens])])
    kw = dict(timesteps=args.T, coding="rate", mode=args.mode, record=("counts", "margins"))
    ref = bs.simulate(net, ids, backend="reference", **kw)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
          f"Lava CPU simulator; {args.checkpoint or 'default model'} {net.dims.as_dict()} (converted in "
          f"{converted:.0f} s), {args.tokens} tokens, T={args.T}, rate, mode {args.mode}")
    print(f"{'graph':9s} {'processes':>9s} {'lava steps':>10s} {'seconds':>8s} {'tokens/s':>9s} "
          f"{'process-steps/s':>15s} {'non-tie diffs':>13s} {'max child RSS GB':>16s}")
    for graph in args.graphs.split(","):
        started = time.perf_counter()
        out = bs.simulate(net, ids, backend="lava", lava_graph=graph, **kw)
        sec = time.perf_counter() - started
        procs, steps = out.settings["lava_processes"], out.settings["lava_timesteps"]
        diffs = spike_differences(ref, out)["non_tie_differences"]
        # Lava runs each Process in a forked child: the largest child so far (a running maximum over graphs)
        child_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6
        print(f"{graph:9s} {procs:9d} {steps:10d} {sec:8.2f} {args.tokens / sec:9.3f} {procs * steps / sec:15.0f} "
              f"{diffs:13d} {child_gb:16.2f}")


if __name__ == "__main__":
    main()
