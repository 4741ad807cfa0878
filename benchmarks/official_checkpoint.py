"""An official-format checkpoint made with the official BDH code (github.com/pathwaycom/bdh).

    git clone https://github.com/pathwaycom/bdh /path/to/bdh      # not shipped here: its own licence
    python benchmarks/official_checkpoint.py --official /path/to/bdh --out official.pt \\
        [--n-layer 6 --n-embd 256 --n-head 4 --multiplier 128] [--steps 0] [--seed 0]

The model is the official ``bdh.BDH(bdh.BDHConfig(...))`` (the official defaults unless given),
optionally trained for ``--steps`` AdamW steps with the official forward and loss on the shared
corpus (as the official train.py does, without torch.compile or AMP), and saved the way a user of
the official code saves it: ``torch.save(model.state_dict(), path)``. The official file stores no
layer count: load it with ``--n-layer`` (bdh-convert) or ``load_model(path, n_layer=...)``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import torch

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


def official_module(repo: str):
    """Import bdh.py from a clone of the official repository (no copy of it lives in this project)."""
    path = Path(repo) / "bdh.py"
    if not path.is_file():
        sys.exit(f"error: {path} not found: pass --official the directory of a clone of pathwaycom/bdh")
    spec = importlib.util.spec_from_file_location("official_bdh", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train(model, steps: int, block: int, batch: int, seed: int) -> None:
    """The official forward and loss, AdamW as in the official train.py (lr 1e-3, weight decay 0.1)."""
    if not CORPUS.is_file():
        sys.exit(f"error: --steps needs the corpus {CORPUS}")
    data = torch.frombuffer(bytearray(CORPUS.read_bytes()), dtype=torch.uint8).long()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    model.train()
    for step in range(steps):
        ix = torch.randint(len(data) - block - 1, (batch,), generator=gen)
        x = torch.stack([data[i:i + block] for i in ix])
        y = torch.stack([data[i + 1:i + 1 + block] for i in ix])
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 10 == 0 or step == steps - 1:
            print(f"step {step}: loss {loss.item():.3f}", file=sys.stderr)
    model.eval()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official", required=True, help="directory of a clone of github.com/pathwaycom/bdh")
    p.add_argument("--out", required=True)
    p.add_argument("--n-layer", type=int)
    p.add_argument("--n-embd", type=int)
    p.add_argument("--n-head", type=int)
    p.add_argument("--multiplier", type=int, help="mlp_internal_dim_multiplier (N = multiplier * n_embd / n_head)")
    p.add_argument("--steps", type=int, default=0)
    p.add_argument("--block", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    bdh = official_module(args.official)
    given = dict(n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_head,
                 mlp_internal_dim_multiplier=args.multiplier)
    config = bdh.BDHConfig(**{k: v for k, v in given.items() if v is not None})
    torch.manual_seed(args.seed)
    model = bdh.BDH(config)
    started = time.perf_counter()
    if args.steps:
        train(model, args.steps, args.block, args.batch, args.seed)
    torch.save(model.state_dict(), args.out)
    print(f"wrote {args.out}: official BDH {config}, {args.steps} training steps "
          f"({time.perf_counter() - started:.0f} s); load with n_layer={config.n_layer}")


if __name__ == "__main__":
    main()
