"""The dense model's validation loss with and without a ladder rung's constraint in its forward
pass (the cost of the constraint to the language model itself, apart from conversion), for each
checkpoint given: a constraint checkpoint (``bdh-train --constraints RUNG``) is measured with the
rung and thresholds it recorded; any other with thresholds calibrated as constraint fine-tuning
calibrates them (mse, one spike per step, first 8192 bytes of the training split of --text) and
the shipped biophysical parameters. Same windows for every checkpoint: the first --windows
block-size windows of the validation split (last 10%) of --text. Prints a table (and --json).

    python benchmarks/constraint_val.py CKPT [CKPT..] --text ../shared/data/tinyshakespeare.txt \
        [--rung lif|rate-linearized|psc|local-plasticity|divisive-norm] [--windows 128] [--block-size 256]
        [--threads 1]

Rungs local-plasticity and divisive-norm are measured with their dense forms beside the activation
(semantics/bio_forms.py), as `bdh-train --constraints` trains them.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from bdh_spiking.backends.brian2.params import load_params
from bdh_spiking.checkpoint import load_checkpoint
from bdh_spiking.constraint_training import calibrate, from_meta
from bdh_spiking.semantics.activation import replaced
from bdh_spiking.semantics.bio_forms import replaced_forms
from bdh_spiking.semantics.constraints import RungNeuron, rung_forms
from bdh_spiking.text import read_bytes, split
from bdh_spiking.train import validation_loss


def measure(path: str, rung: str, train_part, val_part, windows: int, block_size: int) -> dict:
    model, info = load_checkpoint(path)
    model.eval()
    entry = (info.get("meta") or {}).get("constraints")
    if entry:
        act, source = from_meta(entry), f"recorded (rung {entry['rung']}, step {entry['calibrated_at_step']})"
        forms = rung_forms(entry["rung"], entry["biophysical"])
    else:
        params = load_params()
        forms = rung_forms(rung, params)
        act = calibrate(model, train_part, RungNeuron.from_params(rung, params, model.config.n_layer), forms)
        source = "calibrated on the training split"
    started = time.perf_counter()
    plain = validation_loss(model, val_part, block_size, windows)
    with replaced(model, act), replaced_forms(model, forms):
        constrained = validation_loss(model, val_part, block_size, windows)
    return {"checkpoint": path, "rung": act.neuron.rung, "thresholds": source, "val_plain": plain,
            "val_constrained": constrained, "cost": constrained - plain, "windows": windows,
            "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--text", required=True)
    ap.add_argument("--rung", default="lif", help="a rung of --constraints: for checkpoints without a recorded constraint")
    ap.add_argument("--windows", type=int, default=128)
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    train_part, val_part = split(read_bytes(a.text))
    rows = [measure(p, a.rung, train_part, val_part, a.windows, a.block_size) for p in a.checkpoints]
    print(f"validation loss (nats/byte), first {a.windows} windows of {a.block_size} bytes of the validation split "
          f"of {a.text}; CPU ({platform.node()}, {a.threads} thread)")
    print("| checkpoint | rung | thresholds | plain | under the constraint | cost |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['checkpoint']} | {r['rung']} | {r['thresholds']} | {r['val_plain']:.4f} | "
              f"{r['val_constrained']:.4f} | {r['cost']:+.4f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
