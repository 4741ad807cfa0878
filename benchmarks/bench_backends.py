"""Tokens/s of each backend vs the dense model in the matching processing mode, same run, same device.

    python benchmarks/bench_backends.py [--backends reference,snntorch,norse] [--device cpu|cuda]
        [--config default|official] [--T 1,4,8,16] [--batch 1,64] [--tokens 64] [--dtype float64]

Denominators (measured in this run): whole-sequence backends (reference, chunked) against the
dense chunked/parallel forward; token-by-token backends (snntorch, norse: their plastic synapses
are updated token by token) against the dense recurrent form (BDH.step). For snntorch and norse
the event-driven plastic synapses are also timed against a dense update of every synapse
(event_driven=False) to report the speed-up. The device is printed with the table.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

import bdh_spiking as bs

sys.path.insert(0, str(Path(__file__).parent))
from bench_reference import official_size_network, timed  # noqa: E402

TOKEN_BY_TOKEN = {"snntorch", "norse", "brian2", "lava"}


def dense_recurrent(model, ids):
    with torch.no_grad():
        state = model.initial_state(ids.shape[0], ids.device)
        for t in range(ids.shape[1]):
            model.step(ids[:, t], state)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default="reference,snntorch,norse")
    p.add_argument("--device", default="cpu")
    p.add_argument("--config", choices=["default", "official"], default="default")
    p.add_argument("--T", default="1,4,8,16")
    p.add_argument("--batch", default="1,64")
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.add_argument("--coding", default="multispike")
    p.add_argument("--mode", choices=["discrete", "fixed-point"], default="discrete",
                   help="fixed-point: reference and lava run the Loihi 2 integer semantics")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    if args.config == "default":
        model = bs.load_model()
        net = bs.convert(model)
        if args.mode == "fixed-point":
            from bdh_spiking.conversion.quantize import quantize

            net = quantize(net)
    else:
        model, net = official_size_network()
    model = model.to(device=device, dtype=dtype)
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"CPU ({platform.machine()}, {torch.get_num_threads()} torch threads)")
    print(f"device: {name} | torch {torch.__version__} | config {args.config} | dtype {args.dtype} | "
          f"coding {args.coding} | mode {args.mode} | {args.tokens} tokens per sequence")
    print(f"{'backend':>9} {'batch':>5} {'T':>3} {'tok/s':>9} {'dense mode':>10} {'dense tok/s':>11} {'ratio':>6} "
          f"{'dense-update tok/s':>18} {'event speed-up':>14}")
    for B in [int(b) for b in args.batch.split(",")]:
        ids = torch.randint(0, 256, (B, args.tokens), generator=torch.Generator().manual_seed(B)).to(device)
        dense = {}
        with torch.no_grad():
            dense["chunked"] = B * args.tokens / timed(lambda: model(ids, chunk=64), args.repeats)
        dense["recurrent"] = B * args.tokens / timed(lambda: dense_recurrent(model, ids), args.repeats)
        for backend in args.backends.split(","):
            mode = "recurrent" if backend in TOKEN_BY_TOKEN else "chunked"
            for T in [int(t) for t in args.T.split(",")]:
                def run(**opts):
                    return bs.simulate(net, ids, backend=backend, timesteps=T, coding=args.coding,
                                       mode=args.mode, device=device, dtype=dtype, **opts)
                tps = B * args.tokens / timed(run, args.repeats)
                extra = ""
                if backend in ("snntorch", "norse"):
                    dense_update = B * args.tokens / timed(lambda: run(event_driven=False), args.repeats)
                    extra = f"{dense_update:>18,.0f} {tps / dense_update:>14.2f}"
                print(f"{backend:>9} {B:>5} {T:>3} {tps:>9,.0f} {mode:>10} {dense[mode]:>11,.0f} "
                      f"{tps / dense[mode]:>6.2f} {extra}", flush=True)


if __name__ == "__main__":
    main()
