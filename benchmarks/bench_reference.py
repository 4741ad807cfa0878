"""Reference executor speed vs the dense model, measured in the same run on the same device.

    python benchmarks/bench_reference.py [--device cpu|cuda] [--config default|official]
        [--batch 1,8] [--T 1,4,8,16] [--tokens 256] [--dtype float64|float32] [--threads N]

Prints a table: tokens/s of the dense chunked (parallel) forward and of the spiking reference
executor (chunked form) at each T and batch size, and their ratio (the issue's target at T=8 is
>= 0.5). 'official' is the official-size config (6 layers, d=256, 4 heads, n=8192/head) with
random weights and random thresholds (speed only).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

import bdh_spiking as bs
from bdh_spiking.model import BDH, BDHConfig
from bdh_spiking.network import SpikingNetwork


def official_size_network():
    torch.manual_seed(0)
    model = BDH(BDHConfig(n_layer=6, n_embd=256, n_head=4, mlp_internal_dim_multiplier=128, dropout=0.0)).eval()
    c = model.config
    rng = np.random.default_rng(0)
    theta = lambda: rng.uniform(0.05, 0.2, (c.n_layer, c.n_head, c.n_neurons))  # noqa: E731
    sd = model.state_dict()
    arrays = {"embed": sd["embed.weight"].double().numpy(), "encoder": sd["encoder"].double().numpy(),
              "encoder_v": sd["encoder_v"].double().numpy(), "decoder": sd["decoder"].double().numpy(),
              "lm_head": sd["lm_head"].double().numpy(), "freqs": sd["attn.freqs"].reshape(-1).numpy(),
              "theta_x": theta(), "theta_y": theta()}
    config = {"n_layer": c.n_layer, "n_embd": c.n_embd, "n_head": c.n_head, "n_neurons": c.n_neurons,
              "vocab_size": c.vocab_size}
    return model, SpikingNetwork(config=config, arrays=arrays)


def timed(fn, repeats=2):
    best = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--config", choices=["default", "official"], default="default")
    p.add_argument("--batch", default="1,8")
    p.add_argument("--T", default="1,4,8,16")
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    device = torch.device(args.device)
    if args.config == "default":
        model = bs.load_model()
        net = bs.convert(model)
    else:
        model, net = official_size_network()
    model = model.to(device=device, dtype=dtype)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"device: {name} | torch {torch.__version__} | config {args.config} {dict(net.config)} | dtype {args.dtype} | "
          f"{args.tokens} tokens per sequence")
    print(f"{'batch':>5} {'T':>3} {'dense tok/s':>12} {'spiking tok/s':>14} {'ratio':>6}")
    for B in [int(b) for b in args.batch.split(",")]:
        ids = torch.randint(0, 256, (B, args.tokens), generator=torch.Generator().manual_seed(B))
        with torch.no_grad():
            dense_s = timed(lambda: model(ids.to(device), chunk=64), args.repeats)
        dense_tps = B * args.tokens / dense_s
        for T in [int(t) for t in args.T.split(",")]:
            spk_s = timed(lambda: bs.simulate(net, ids, timesteps=T, device=device, dtype=dtype), args.repeats)
            spk_tps = B * args.tokens / spk_s
            print(f"{B:>5} {T:>3} {dense_tps:>12,.0f} {spk_tps:>14,.0f} {spk_tps / dense_tps:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
