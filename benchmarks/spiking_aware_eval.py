"""Fidelity of the converted network at low T, in and out of domain: top-1, dCE, KL against the
plain dense (ReLU) forward, spikes per token and the clipped activation mass, for
  - the default conversion (mse thresholds at design T=16, K=4 on the shipped calibration text),
  - one headroom rule (theta >= h * calibration max / K per neuron, h picked on a training-split
    slice disjoint from the calibration text),
  - a spiking-aware checkpoint's own thresholds (--model CKPT).

The converted network's logits are computed with the closed form of its neurons
(semantics.activation.SpikingQuantizer in the dense forward, float64), which
tests/test_spiking_aware.py proves equal to the reference executor up to near-threshold ties;
--check-reference re-runs one point with bs.simulate and prints both. Product gating, multispike
coding (K=4) unless --max-spikes. Run from the repository root; prints a table.

    python benchmarks/spiking_aware_eval.py [--model CKPT] [--T 2,4,8,16] [--tokens 4096]
        [--train ../shared/data/tinyshakespeare.txt] [--check-reference]
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch
import torch.nn.functional as F

import bdh_spiking as bs
from bdh_spiking.checkpoint import load_checkpoint
from bdh_spiking.clipping import clipping
from bdh_spiking.conversion.calibration import collect_stats, thresholds
from bdh_spiking.conversion import trained_thresholds
from bdh_spiking.dense_probe import dense_reference
from bdh_spiking.semantics.activation import SpikingQuantizer, replaced
from bdh_spiking.text import read_bytes, shipped_text_path, split, to_ids, windows

OOD = "bdh_spiking/data/ood_english.txt"


def quantized_logits(dense64, q: SpikingQuantizer, ids):
    spikes = {"n": 0.0}

    class Counting(SpikingQuantizer):
        def _quantize(self, pop, layer, current):
            out = SpikingQuantizer._quantize(self, pop, layer, current)
            spikes["n"] += float((out / self._theta(pop, layer, current)).sum()) * self.timesteps
            return out

    with torch.no_grad(), replaced(dense64, Counting(q.theta["x"], q.theta["y"], q.timesteps, q.max_spikes)):
        logits = dense64(ids)[0]
    return logits, spikes["n"] / ids.numel()


def fidelity(d, s, ids) -> dict:
    ce = lambda lg: float(F.cross_entropy(lg[:, :-1].reshape(-1, 256), ids[:, 1:].reshape(-1)))  # noqa: E731
    lp_d = F.log_softmax(d, -1)
    return {"top1": float((s.argmax(-1) == d.argmax(-1)).double().mean()),
            "dce": (ce(s) - ce(d)) / ce(d),
            "kl": float((lp_d.exp() * (lp_d - F.log_softmax(s, -1))).sum(-1).mean())}


class _Net:  # what clipping() reads
    def __init__(self, tx, ty):
        self.gating, self.arrays = "product", {"theta_x": tx.numpy(), "theta_y": ty.numpy()}


def default_designs(dense, calib, K: int, headroom: str) -> dict:
    """The default thresholds (mse at design T=16, K) and, per h, theta = max(default, h * calibration max / K)."""
    stats = collect_stats(dense, calib, "product")
    designs = {"default(mse16)": [thresholds(stats[p], "neuron", 1.0, (16, K))[0] for p in ("x", "y")]}
    cmax = [stats[p].top[..., 0].double() for p in ("x", "y")]
    for h in [float(v) for v in headroom.split(",") if v]:
        designs[f"headroom{h:g}"] = [torch.maximum(t, h * m / K) for t, m in zip(designs["default(mse16)"], cmax)]
    return designs


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default=None)
    p.add_argument("--T", default="2,4,8,16")
    p.add_argument("--max-spikes", type=int, default=4)
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--train", default="../shared/data/tinyshakespeare.txt")
    p.add_argument("--headroom", default="1.0,1.5", help="h values tried on the disjoint training slice")
    p.add_argument("--check-reference", action="store_true")
    p.add_argument("--train-slice", action="store_true", help="also evaluate on a training-split slice")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    model, info = load_checkpoint(a.model)
    K = a.max_spikes
    dense = copy.deepcopy(model).double().eval()
    dense.attn.freqs = model.attn.freqs.to(torch.float32).clone()
    calib = to_ids(read_bytes(shipped_text_path("calibration")))
    texts = {"ood_english": windows(read_bytes(OOD)[: a.tokens], 256),
             "heldout": windows(read_bytes(shipped_text_path("heldout"))[: a.tokens], 256)}
    # a training-split slice disjoint from calibration.txt (the start of Tiny Shakespeare's training
    # split): a.tokens bytes from the middle of the training split
    if a.train_slice:
        train_part = split(read_bytes(a.train))[0]
        mid = len(train_part) // 2
        texts["train_slice"] = windows(train_part[mid: mid + a.tokens], 256)
    aware = trained_thresholds(model, "product", 0.5)
    if aware is not None:
        designs = {f"spiking-aware(T{aware['timesteps']}K{aware['max_spikes']})": [aware["theta_x"], aware["theta_y"]]}
    else:
        designs = default_designs(dense, calib, K, a.headroom)
    rows = []
    for text, ids in texts.items():
        ref = dense_reference(model, ids)
        for name, (tx, ty) in designs.items():
            clip = clipping(ref, _Net(tx, ty), "multispike", K)
            for T in [int(t) for t in a.T.split(",")]:
                started = time.perf_counter()
                logits, spt = quantized_logits(dense, SpikingQuantizer(tx, ty, T, K), ids)
                row = {"text": text, "thresholds": name, "T": T, "K": K, "tokens": int(ids.numel()),
                       **fidelity(ref.logits, logits, ids), "spikes_per_token": spt,
                       "clipped_fraction": clip["clipped_fraction"], "clipped_fraction_x": clip["clipped_fraction_x"],
                       "clipped_fraction_y": clip["clipped_fraction_y"], "s": time.perf_counter() - started}
                rows.append(row)
                print(f"{text:12s} {name:24s} T={T:2d} top1 {row['top1']:.2%}  dCE {row['dce']:+.3%}  KL "
                      f"{row['kl']:.2e}  spikes/tok {spt:,.0f}  clipped {row['clipped_fraction']:.3%} "
                      f"(x {row['clipped_fraction_x']:.3%}, y {row['clipped_fraction_y']:.3%})", flush=True)
    if a.check_reference:
        name, (tx, ty) = next(iter(designs.items()))
        ids = texts["ood_english"][:2, :128]
        net = bs.convert(model, gating="product", calibration=calib, design_T=16, design_max_spikes=K)
        net.arrays["theta_x"], net.arrays["theta_y"] = tx.numpy(), ty.numpy()
        sim = bs.simulate(net, ids, timesteps=4, coding="multispike", max_spikes=K).logits
        closed, _ = quantized_logits(dense, SpikingQuantizer(tx, ty, 4, K), ids)
        print(f"check ({name}, T=4, 256 OOD tokens): reference executor vs closed form max rel dlogit "
              f"{float((sim - closed).abs().max() / sim.abs().max()):.2e}")
    print(f"model: {info['path']} sha256 {info['sha256'][:16]}  device: cpu ({torch.get_num_threads()} thread)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"model_sha256": info["sha256"], "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
