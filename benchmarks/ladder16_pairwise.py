"""How far each rung of issue 16 is from the rung below it, on the same network and bytes: the
default model converted as `bdh-convert --mode biophysical` converts it, run at rungs psc, dale,
onoff (Brian2, cpp_standalone by default), and compared pairwise: top-1 agreement, KL per byte
and the largest logit difference between rungs, plus each rung against the dense model (top-1,
dCE). The first rung of each pair is the baseline, measured in the same run. The null
(--null-noise SIGMA): the first rung again with membrane noise SIGMA, against itself without: how far
a small perturbation of spike timing alone moves the network.

    python benchmarks/ladder16_pairwise.py [--max-tokens 8] [--rungs psc,dale,onoff] [--device cpp_standalone]
        [--null-noise 0.01]
"""

from __future__ import annotations

import argparse
import json
import platform

import torch
import torch.nn.functional as F

import bdh_spiking as bs
from bdh_spiking.cli.common import prepare_network
from bdh_spiking.cli.convert import convert_parser


def _pair(a: torch.Tensor, b: torch.Tensor) -> dict:
    """a: baseline logits, b: the other's (B, T, V)."""
    pa, pb = F.log_softmax(a, -1), F.log_softmax(b, -1)
    return {"top1": float((a.argmax(-1) == b.argmax(-1)).double().mean()),
            "kl_per_byte": float((pa.exp() * (pa - pb)).sum(-1).mean()),
            "max_abs_logit_diff": float((a - b).abs().max())}


def _ce(logits: torch.Tensor, ids: torch.Tensor) -> float:
    return float(F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).double(), ids[:, 1:].reshape(-1)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-tokens", type=int, default=8)
    p.add_argument("--rungs", default="psc,dale,onoff")
    p.add_argument("--device", default="cpp_standalone")
    p.add_argument("--json", default=None)
    p.add_argument("--null-noise", type=float, default=None)
    a = p.parse_args(argv)
    args = convert_parser().parse_args(["--backend", "brian2", "--mode", "biophysical",
                                        "--max-tokens", str(a.max_tokens)])
    model, net, ids, name = prepare_network(args)
    with torch.no_grad():
        dense = model(ids)[0].double()
    rungs = a.rungs.split(",")
    logits, settings = {}, {}
    for rung in rungs:
        out = bs.simulate(net, ids, backend="brian2", mode="biophysical", ladder=rung, brian2_device=a.device)
        logits[rung], settings[rung] = out.logits.double(), out.settings
    ce_dense = _ce(dense, ids)
    rows = []
    for k, rung in enumerate(rungs):
        row = {"rung": rung, "vs_dense": _pair(dense, logits[rung]),
               "dCE": (_ce(logits[rung], ids) - ce_dense) / ce_dense,
               "dale_violations": settings[rung].get("dale_violations"),
               "negative_rates": settings[rung].get("negative_rates")}
        if k:
            row["vs_" + rungs[k - 1]] = _pair(logits[rungs[k - 1]], logits[rung])
        rows.append(row)
    if a.null_noise is not None:
        base = rungs[0]
        out = bs.simulate(net, ids, backend="brian2", mode="biophysical", ladder=base, brian2_device=a.device,
                          noise=a.null_noise)
        rows.append({"rung": f"{base}+noise{a.null_noise:g}", "vs_dense": _pair(dense, out.logits.double()),
                     "dCE": (_ce(out.logits.double(), ids) - ce_dense) / ce_dense, f"vs_{base}": _pair(
                         logits[base], out.logits.double()), "dale_violations": out.settings.get("dale_violations"),
                     "negative_rates": out.settings.get("negative_rates")})
    print(f"ladder16 pairwise | text {name} ({ids.shape[1]} bytes) | dense CE {ce_dense:.4f} | brian2 {a.device} on "
          f"{platform.processor() or platform.machine()} (CPU)")
    print(f"{'rung':>14}  {'top1 vs dense':>13}  {'dCE':>8}  {'vs rung below: top1':>20}  {'KL/byte':>8}  "
          f"{'max |dlogit|':>12}  {'Dale viol.':>10}  {'neg. rates':>10}")
    for row in rows:
        below = next((v for k, v in row.items() if k.startswith("vs_") and k != "vs_dense"), None)
        cells = ("-", "-", "-") if below is None else (f"{below['top1']:.2%}", f"{below['kl_per_byte']:.4f}",
                                                        f"{below['max_abs_logit_diff']:.3f}")
        print(f"{row['rung']:>14}  {row['vs_dense']['top1']:>13.2%}  {row['dCE']:>+8.2%}  {cells[0]:>20}  "
              f"{cells[1]:>8}  {cells[2]:>12}  {row['dale_violations']!s:>10}  {row['negative_rates']!s:>10}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"text": name, "bytes": int(ids.shape[1]), "dense_ce": ce_dense, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
