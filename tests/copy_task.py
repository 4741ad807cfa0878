"""The synthetic copy task, and the script that trained tests/data/copy_model.pt on it (seeded).

The task: a random string of 8 to 20 lowercase letters, repeated to fill the sequence. Its period
varies, so a model can only predict the repeats by looking up what followed the current letter
earlier in the passage (an induction-style copy through its Hebbian state), not by a fixed
positional offset. tests/test_study.py uses the model to check that freezing plasticity removes
the context benefit. Run from the project root:

    python tests/copy_task.py [--steps 3000] [--multiplier 8] [--out tests/data/copy_model.pt]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from bdh_spiking.checkpoint import save_checkpoint
from bdh_spiking.model import BDH, BDHConfig

SEQ_LEN = 64
PERIODS = (8, 20)  # inclusive range of the repeated string's length


def copy_task(n: int, rng: np.random.Generator, seq_len: int = SEQ_LEN) -> tuple[np.ndarray, np.ndarray]:
    """(ids (n, seq_len + 1), period (n,)): each row a random lowercase string repeated."""
    ids = np.zeros((n, seq_len + 1), dtype=np.int64)
    periods = rng.integers(PERIODS[0], PERIODS[1] + 1, size=n)
    for row, p in enumerate(periods):
        word = rng.integers(ord("a"), ord("z") + 1, size=p)
        ids[row] = np.tile(word, seq_len // p + 2)[: seq_len + 1]
    return ids, periods


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-embd", type=int, default=64)
    ap.add_argument("--multiplier", type=int, default=8)
    ap.add_argument("--out", default="tests/data/copy_model.pt")
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    config = BDHConfig(n_layer=2, n_embd=args.n_embd, n_head=2, mlp_internal_dim_multiplier=args.multiplier,
                       dropout=0.0)
    model = BDH(config)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=args.steps, pct_start=0.05)
    started = time.time()
    for step in range(1, args.steps + 1):
        batch, periods = copy_task(args.batch, rng)
        x, y = torch.from_numpy(batch[:, :-1]), torch.from_numpy(batch[:, 1:])
        logits, _ = model(x)
        ce = F.cross_entropy(logits.reshape(-1, 256), y.reshape(-1), reduction="none").view(y.shape)
        loss = ce.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == args.steps:
            # target index i predicts byte i+1; it is a copy once i + 1 >= period
            copy = torch.arange(SEQ_LEN)[None] + 1 >= torch.from_numpy(periods)[:, None]
            print(f"step {step} loss {loss.item():.3f} first pass {ce[~copy].mean().item():.3f} "
                  f"copies {ce[copy].mean().item():.3f} ({time.time() - started:.0f} s)", flush=True)
    model.eval()
    save_checkpoint(args.out, model, meta={
        "task": "copy: a random string of 8-20 lowercase letters repeated to 64 bytes",
        "steps": args.steps, "batch": args.batch, "seed": args.seed, "final_train_loss": float(loss.item()),
        "script": "tests/copy_task.py"})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
