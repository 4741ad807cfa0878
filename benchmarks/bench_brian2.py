"""Brian2 speed: tokens/s (discrete and biophysical), simulated biological seconds per wall-clock
second (biophysical), peak memory; the reference executor measured in the same run.

    python benchmarks/bench_brian2.py [--tokens 8] [--T 4] [--target numpy|cython] [--token-ms 100]

First-run time (code generation or Cython compilation) and steady state are reported separately:
each configuration is run twice in the same process and both wall times are printed.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import torch

import bdh_spiking as bs
from bdh_spiking.text import read_bytes, shipped_text_path


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: kB


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=8)
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--target", choices=["numpy", "cython"], default="numpy")
    p.add_argument("--token-ms", type=float, default=100.0)
    args = p.parse_args()
    model = bs.load_model()
    net = bs.convert(model)
    ids = torch.as_tensor(read_bytes(shipped_text_path("heldout"))[: args.tokens].astype("int64"))[None]
    print(f"device: CPU ({platform.machine()}, {torch.get_num_threads()} torch threads) | brian2 target "
          f"{args.target} | default model | {args.tokens} tokens | multispike T={args.T} | token {args.token_ms} ms")
    print(f"{'run':>24} {'first s':>8} {'steady s':>9} {'tok/s':>7} {'bio s / wall s':>14} {'peak RSS GB':>11}")
    runs = [
        ("reference (discrete)", dict(backend="reference")),
        ("brian2 discrete", dict(backend="brian2", target=args.target)),
        ("brian2 biophysical", dict(backend="brian2", mode="biophysical", target=args.target,
                                    token_ms=args.token_ms)),
    ]
    for name, opts in runs:
        walls = []
        for _ in range(2):
            t = time.perf_counter()
            out = bs.simulate(net, ids, timesteps=args.T, coding="multispike", **opts)
            walls.append(time.perf_counter() - t)
        steady = walls[1]
        bio = ""
        if opts.get("mode") == "biophysical":
            bio_s = out.settings.get("simulated_ms", None)
            bio_s = bio_s / 1000 if bio_s is not None else None
            bio = f"{bio_s / steady:>14.3f}" if bio_s else f"{'n/a':>14}"
        print(f"{name:>24} {walls[0]:>8.2f} {steady:>9.2f} {args.tokens / steady:>7.2f} {bio:>14} "
              f"{peak_rss_gb():>11.2f}", flush=True)


if __name__ == "__main__":
    main()
