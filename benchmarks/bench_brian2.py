"""Brian2 speed and memory: tokens/s (discrete and biophysical), simulated biological seconds per
wall-clock second (biophysical), peak memory; the reference executor measured in the same run.

    python benchmarks/bench_brian2.py [--config default|official|L,D,H,N] [--tokens 4] [--T 4]
        [--target auto|numpy|cython] [--token-ms 100] [--runs reference,discrete,biophysical]
        [--threads N]
    python benchmarks/bench_brian2.py --runs biophysical,psc-runtime,psc-standalone[,psc-standalone-summed,psc-standalone-dend2] --tokens 4
    python benchmarks/bench_brian2.py --memory-scan 512,1024,2048 [--limit-gb 24]

Runs: `biophysical` is today's biophysical mode (rung rate-linearized, runtime device, the
NetworkOperation; the issue's baseline); `psc-runtime` and `psc-standalone` are rung psc (the
network as Brian2 objects only) on the runtime device (codegen --target) and on cpp_standalone
(OpenMP threads --threads; the project is built in ~/.cache/bdh-spiking/brian2/standalone, the
first run of a structure compiles it, later runs reuse it); `psc-standalone-summed` is the same with
the plastic read summed on every graded step (plastic_read "summed"; the default reads by x's spikes,
docs/spiking-semantics.md); `psc-standalone-dend2` is the same with
the dendritic sums on a 2 ms clock (parameter dendrite_dt_ms; a change of the dynamics). Each row
names the Brian2 device and the load average of the machine while it ran (the machine may be shared).

Every run is a fresh subprocess, so its peak RSS is its own. First-run time (code generation or
Cython compilation, network construction) and steady state are reported separately: a run
simulates the text `--repeats` times (default 2) in the same process.

`--config official` is the official BDH-GPU size (6 layers, d=256, 4 heads, n=8192 per head) with
random weights (BDH's own initialisation, seeded), converted on 1 KiB of the shipped calibration
text. `--memory-scan` runs Brian2 mode discrete for one token at the official L, d and heads with
the listed neurons per head, fits peak RSS = a + b * synapses and reports the largest network of
that shape that fits in --limit-gb (an extrapolation from the measured points, said as such).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

OFFICIAL = dict(n_layer=6, n_embd=256, n_head=4, n_neurons=8192)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: kB


def parse_config(text: str) -> dict:
    if text == "default":
        return {"name": "default"}
    if text == "official":
        return dict(OFFICIAL, name="official")
    L, D, H, N = (int(v) for v in text.split(","))
    return dict(n_layer=L, n_embd=D, n_head=H, n_neurons=N, name=f"L{L} D{D} H{H} N{N}")


def build_network(config: dict, **convert_kw):
    import torch

    import bdh_spiking as bs
    from bdh_spiking.model import BDH, BDHConfig
    from bdh_spiking.text import read_bytes, shipped_text_path

    if config["name"] == "default":
        model = bs.load_model()
        return bs.convert(model, **convert_kw), model
    torch.manual_seed(0)
    if (config["n_neurons"] * config["n_head"]) % config["n_embd"]:
        raise SystemExit(f"n per head x heads must be a multiple of d (BDH's multiplier): {config}")
    mult = config["n_neurons"] * config["n_head"] // config["n_embd"]
    model = BDH(BDHConfig(n_layer=config["n_layer"], n_embd=config["n_embd"], n_head=config["n_head"],
                          mlp_internal_dim_multiplier=mult, dropout=0.0)).eval()
    calibration = bytes(read_bytes(shipped_text_path("calibration"))[:1024])
    return bs.convert(model, calibration=calibration, **convert_kw), model


def run_one(spec: dict) -> dict:
    """One configuration x one simulator in this process (called in a subprocess)."""
    import torch

    import bdh_spiking as bs
    from bdh_spiking.text import read_bytes, shipped_text_path

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    t0 = time.perf_counter()
    # mode biophysical needs thresholds designed for one spike per step (as bdh-convert converts them)
    bio = spec["opts"].get("mode") == "biophysical"
    net, _ = build_network(spec["config"], **({"design_max_spikes": 1} if bio else {}))
    convert_s = time.perf_counter() - t0
    ids = torch.as_tensor(read_bytes(shipped_text_path("heldout"))[: spec["tokens"]].astype("int64"))[None]
    opts = dict(spec["opts"])
    walls, out = [], None
    for _ in range(spec["repeats"]):
        t = time.perf_counter()
        out = bs.simulate(net, ids, timesteps=spec["T"], coding="multispike", **opts)
        walls.append(time.perf_counter() - t)
    d = net.dims
    synapses = 4 * d.L * d.H * d.D * d.N  # E, E_v, plastic, decoder (batch 1)
    sim_ms = out.settings.get("simulated_ms")
    return {"walls": walls, "convert_s": convert_s, "peak_rss_gb": peak_rss_gb(), "synapses": synapses,
            "neurons": 2 * d.L * d.H * d.N, "simulated_ms": sim_ms,
            "target": out.settings.get("target"), "build_s": out.settings.get("build_s"),
            "brian2_device": out.settings.get("brian2_device", "runtime" if spec["opts"]["backend"] == "brian2"
                                              else "-")}


def spawn(spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--_one", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"exit {proc.returncode}: {tail[:160]}"}
    lines = proc.stdout.strip().splitlines()
    if not lines:
        return {"error": "the run printed no result"}
    return json.loads(lines[-1])


RUNS = {
    "reference": ("reference (discrete)", dict(backend="reference")),
    "discrete": ("brian2 discrete", dict(backend="brian2")),
    "biophysical": ("brian2 biophysical", dict(backend="brian2", mode="biophysical")),
    "psc-runtime": ("brian2 bio psc", dict(backend="brian2", mode="biophysical", ladder="psc",
                                           brian2_device="runtime")),
    "psc-standalone": ("brian2 bio psc", dict(backend="brian2", mode="biophysical", ladder="psc",
                                              brian2_device="cpp_standalone")),
    # the plastic read summed on every graded step (plastic_read "summed", the read before the event read)
    "psc-standalone-summed": ("bio psc summed read", dict(backend="brian2", mode="biophysical", ladder="psc",
                                                          brian2_device="cpp_standalone", plastic_read="summed")),
    # the dendritic sums (E, E_v) on a 2 ms clock: faster, at a fidelity cost (docs/backends.md)
    "psc-standalone-dend2": ("bio psc dendrite 2ms", dict(backend="brian2", mode="biophysical", ladder="psc",
                                                           brian2_device="cpp_standalone", dendrite_dt_ms=2.0)),
}


def speed_table(args) -> None:
    config = parse_config(args.config)
    print(f"device: CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores; 1 torch thread) | "
          f"brian2 target {args.target} | config {config['name']} | {args.tokens} tokens | multispike T={args.T} | "
          f"token {args.token_ms} ms | {args.repeats} repeats per process | OpenMP threads {args.threads or '-'}")
    print(f"{'run':>22} {'brian2 device':>14} {'target':>7} {'synapses':>11} {'convert s':>9} {'first s':>8} "
          f"{'steady s':>9} {'tok/s':>7} {'bio s/wall s':>12} {'peak RSS GB':>11} {'load':>5}")
    for key in args.runs.split(","):
        name, opts = RUNS[key]
        opts = dict(opts)
        if opts["backend"] == "brian2":
            opts["target"] = args.target
        if opts.get("mode") == "biophysical":
            opts["token_ms"] = args.token_ms
        if opts.get("brian2_device") == "cpp_standalone" and args.threads:
            opts["threads"] = args.threads
        r = spawn({"config": config, "tokens": args.tokens, "T": args.T, "repeats": args.repeats, "opts": opts},
                  args.timeout)
        if "error" in r:
            print(f"{name:>22} {r['error']}", flush=True)
            continue
        steady = r["walls"][-1]
        bio = f"{r['simulated_ms'] / 1000 / steady:>12.4f}" if r.get("simulated_ms") else f"{'':>12}"
        print(f"{name:>22} {r['brian2_device']:>14} {r['target'] or '-':>7} {r['synapses']:>11,} "
              f"{r['convert_s']:>9.1f} {r['walls'][0]:>8.2f} {steady:>9.2f} {args.tokens / steady:>7.3f} {bio} "
              f"{r['peak_rss_gb']:>11.2f} {os.getloadavg()[0]:>5.1f}", flush=True)


def memory_scan(args) -> None:
    sizes = [int(v) for v in args.memory_scan.split(",")]
    L, D, H = OFFICIAL["n_layer"], OFFICIAL["n_embd"], OFFICIAL["n_head"]
    print(f"device: CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores) | brian2 discrete, "
          f"target {args.target}, 1 token, T=1 | L={L} d={D} heads={H}, n per head varied | limit {args.limit_gb} GB")
    print(f"{'n/head':>7} {'synapses':>12} {'neurons':>9} {'build+run s':>11} {'peak RSS GB':>11}")
    rows = []
    for n in sizes:
        config = dict(n_layer=L, n_embd=D, n_head=H, n_neurons=n, name=f"n{n}")
        r = spawn({"config": config, "tokens": 1, "T": 1, "repeats": 1,
                   "opts": dict(backend="brian2", target=args.target)}, args.timeout)
        if "error" in r:
            print(f"{n:>7} {r['error']}", flush=True)
            continue
        rows.append((r["synapses"], r["peak_rss_gb"]))
        print(f"{n:>7} {r['synapses']:>12,} {r['neurons']:>9,} {r['walls'][0]:>11.1f} {r['peak_rss_gb']:>11.2f}",
              flush=True)
    if len(rows) >= 2:
        syn, gb = np.array(rows, dtype=float).T
        slope, intercept = np.polyfit(syn, gb, 1)
        max_syn = (args.limit_gb - intercept) / slope
        per_n = 4 * L * H * D  # synapses per neuron of n
        print(f"fit: peak RSS = {intercept:.2f} GB + {slope * 1e9:.1f} bytes x synapses "
              f"(from {len(rows)} measured sizes)")
        print(f"largest of this shape within {args.limit_gb} GB (extrapolated): about {max_syn / 1e6:,.0f} M "
              f"synapses, n = {max_syn / per_n:,.0f} neurons per head (official n = {OFFICIAL['n_neurons']:,} "
              f"needs {per_n * OFFICIAL['n_neurons'] / 1e6:,.0f} M synapses, about "
              f"{intercept + slope * per_n * OFFICIAL['n_neurons']:.1f} GB)")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="default", help="default | official | L,D,H,N (random weights)")
    p.add_argument("--tokens", type=int, default=4)
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--target", choices=["auto", "numpy", "cython"], default="auto")
    p.add_argument("--token-ms", type=float, default=100.0)
    p.add_argument("--runs", default="reference,discrete,biophysical")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per run (subprocess)")
    p.add_argument("--memory-scan", default=None, metavar="N1,N2,...")
    p.add_argument("--limit-gb", type=float, default=24.0)
    p.add_argument("--threads", type=int, default=None, help="OpenMP threads of the cpp_standalone runs")
    p.add_argument("--_one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._one:
        print(json.dumps(run_one(json.loads(args._one))))
    elif args.memory_scan:
        memory_scan(args)
    else:
        speed_table(args)


if __name__ == "__main__":
    main()
