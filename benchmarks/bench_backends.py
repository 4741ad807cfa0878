"""Tokens/s of the snnTorch / Norse / reference backends vs the dense model, same run, same device.

Target (the issue's CPU measurement; prints one table):

    python benchmarks/bench_backends.py --target
        default model, float32, 64 sequences x 64 tokens, T=8: each backend (simulate defaults:
        chunked form) against load_model().float() parallel forward under no_grad, best of 2,
        same process.

Sweep (one command on a GPU machine prints everything; also runs on the CPU):

    python benchmarks/bench_backends.py --device cuda [--configs default,official] [--T 1,4,8,16]
        [--batch 1,64] [--dtypes float32,float64] [--tokens 64] [--backends snntorch,norse,reference]
        [--check-batch 2] [--check-tokens 32]

For every config x dtype x batch: the dense parallel (chunked) and dense recurrent forwards
(denominators, measured in this run), then every backend x T: tokens/s and both ratios; per
config and dtype, spike differences of each backend (on the device) against the CPU float64
reference on --check-batch x --check-tokens tokens (differing spikes, near-threshold ties,
max relative logit difference); on CUDA, the peak GPU memory of each run. ``--stepwise`` also
times the token-by-token (event-driven) plastic form.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import torch

import bdh_spiking as bs
from bdh_spiking.report import spike_differences

sys.path.insert(0, str(Path(__file__).parent))
from bench_reference import official_size_network, timed  # noqa: E402

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def dense_recurrent(model, ids):
    with torch.no_grad():
        state = model.initial_state(ids.shape[0], ids.device)
        for t in range(ids.shape[1]):
            model.step(ids[:, t], state)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"CPU ({platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
            f"load average {load:.1f} at start)")


def build(config: str):
    if config == "default":
        return bs.load_model(), bs.convert(bs.load_model())
    return official_size_network()


def target(args):
    """The issue's CPU target: default model, float32, 64 x 64 tokens, T=8, best of 2."""
    device = torch.device(args.device)
    model = bs.load_model().float().to(device).eval()
    net = bs.convert(bs.load_model())
    ids = torch.randint(0, 256, (64, 64), generator=torch.Generator().manual_seed(0)).to(device)
    n = ids.numel()
    print(f"device: {device_name(device)} | torch {torch.__version__} | default model | float32 | 64 x 64 tokens | "
          f"T=8 | best of {args.repeats}")
    with torch.no_grad():
        dense = n / timed(lambda: model(ids), args.repeats)
    print(f"{'run':>26} {'tok/s':>9} {'vs dense parallel':>17}")
    print(f"{'dense parallel (float32)':>26} {dense:>9,.0f} {1.0:>17.2f}", flush=True)
    for backend in args.backends.split(","):
        forms = [("chunked", {})] + ([("stepwise", {"stepwise": True})] if args.stepwise else [])
        for form, opts in forms:
            tps = n / timed(lambda: bs.simulate(net, ids, backend=backend, timesteps=8, dtype=torch.float32,
                                                device=device, **opts), args.repeats)
            print(f"{backend + ' (' + form + ')':>26} {tps:>9,.0f} {tps / dense:>17.2f}", flush=True)


_REFERENCE = {}


def check_spikes(net, backend, device, dtype, T, args):
    """Spike differences of the backend on the device against the CPU float64 reference."""
    ids = torch.randint(0, 256, (args.check_batch, args.check_tokens), generator=torch.Generator().manual_seed(7))
    key = (id(net), T)
    if key not in _REFERENCE:
        _REFERENCE[key] = bs.simulate(net, ids, backend="reference", timesteps=T, coding=args.coding,
                                      dtype=torch.float64, record=("counts", "margins"))
    ref = _REFERENCE[key]
    out = bs.simulate(net, ids, backend=backend, timesteps=T, coding=args.coding, dtype=dtype, device=device,
                      record=("counts",))
    diffs = spike_differences(ref, out)
    scale = float(ref.logits.abs().max())
    rel = float((out.logits.double().cpu() - ref.logits).abs().max()) / scale if scale else 0.0
    return diffs["differing_spikes_vs_reference"], diffs["near_threshold_ties"], rel


def sweep_config(config, args, device):
    model, net = build(config)
    for dname in args.dtypes.split(","):
        dtype = DTYPES[dname]
        dense_model = model.to(device=device, dtype=dtype).eval()
        print(f"\n== config {config} (L={net.dims.L}, D={net.dims.D}, H={net.dims.H}, N={net.dims.N}) | {dname}")
        if args.check_tokens:
            for backend in args.backends.split(","):
                for T in args.T_list:
                    d, ties, rel = check_spikes(net, backend, device, dtype, T, args)
                    print(f"  spikes vs CPU float64 reference: {backend:>9} T={T:>2}: differing {d}, "
                          f"near-threshold ties {ties}, max_rel_dlogit {rel:.2e}", flush=True)
        print(f"{'backend':>9} {'batch':>5} {'T':>3} {'tok/s':>10} {'dense par':>10} {'ratio':>6} "
              f"{'dense rec':>10} {'ratio':>6} {'peak MB':>8}")
        for B in args.batch_list:
            ids = torch.randint(0, 256, (B, args.tokens), generator=torch.Generator().manual_seed(B)).to(device)
            n = ids.numel()
            with torch.no_grad():
                par = n / timed(lambda: dense_model(ids), args.repeats)
            rec = n / timed(lambda: dense_recurrent(dense_model, ids), args.repeats)
            for backend in args.backends.split(","):
                for T in args.T_list:
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
                    tps = n / timed(lambda: bs.simulate(net, ids, backend=backend, timesteps=T, coding=args.coding,
                                                        device=device, dtype=dtype), args.repeats)
                    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
                    print(f"{backend:>9} {B:>5} {T:>3} {tps:>10,.0f} {par:>10,.0f} {tps / par:>6.2f} {rec:>10,.0f} "
                          f"{tps / rec:>6.2f} {peak:>8,.0f}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", action="store_true", help="the issue's CPU target measurement only")
    p.add_argument("--backends", default="snntorch,norse,reference")
    p.add_argument("--device", default="cpu")
    p.add_argument("--configs", default="default,official")
    p.add_argument("--T", default="1,4,8,16")
    p.add_argument("--batch", default="1,64")
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--coding", default="multispike")
    p.add_argument("--check-batch", type=int, default=2)
    p.add_argument("--check-tokens", type=int, default=32, help="0: skip the spike check against the reference")
    p.add_argument("--stepwise", action="store_true", help="--target: also time the stepwise plastic form")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.target:
        return target(args)
    device = torch.device(args.device)
    args.T_list = [int(t) for t in args.T.split(",")]
    args.batch_list = [int(b) for b in args.batch.split(",")]
    print(f"device: {device_name(device)} | torch {torch.__version__} | coding {args.coding} | "
          f"{args.tokens} tokens per sequence | best of {args.repeats}")
    for config in args.configs.split(","):
        sweep_config(config, args, device)


if __name__ == "__main__":
    main()
