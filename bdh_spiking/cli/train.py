"""bdh-train: train a dense byte-level BDH (or strip a checkpoint's optimizer state)."""

from __future__ import annotations

import argparse
import sys

from .common import (Parser, check_input_file, check_output_file, entry_point, log, nonneg_float, nonneg_int,
                     number_type, positive_float, positive_int)


def train_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="bdh-train",
        description="Train a dense byte-level BDH on a text file (resumable, atomic checkpoints).",
        example="bdh-train --text input.txt --out model.pt --steps 3000 --time-limit 3600",
    )
    p.add_argument("--text", required=True, help="training corpus (any bytes); last 10%% is validation")
    p.add_argument("--out", required=True, help="checkpoint to write (and to resume from with --resume)")
    p.add_argument("--resume", action="store_true", help="continue training from --out if it exists")
    p.add_argument("--force", action="store_true", help="replace an existing --out (without it, an existing "
                   "file is refused unless --resume)")
    p.add_argument("--steps", type=positive_int, default=3000, help="total optimizer steps (default 3000)")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--block-size", type=positive_int, default=256, help="training sequence length")
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--weight-decay", type=nonneg_float, default=0.1)
    p.add_argument("--warmup-steps", type=nonneg_int, default=100)
    p.add_argument("--eval-every", type=positive_int, default=250)
    p.add_argument("--eval-windows", type=positive_int, default=32,
                   help="validation windows used for the periodic estimate (the final one uses all)")
    p.add_argument("--save-every", type=positive_int, default=250)
    p.add_argument("--time-limit", type=positive_float, default=None, help="stop after this many seconds (> 0)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=1337)
    g = p.add_argument_group("model config (ignored with --resume: the checkpoint's config is used)")
    g.add_argument("--n-layer", type=positive_int, default=6)
    g.add_argument("--n-embd", type=positive_int, default=256)
    g.add_argument("--n-head", type=positive_int, default=4)
    g.add_argument("--mult", type=positive_int, default=128,
                   help="neurons per head = mult * n_embd / n_head (official name: mlp_internal_dim_multiplier)")
    g.add_argument("--dropout", type=number_type(0.0, 1.0, high_open=True), default=0.1)
    p.add_argument("--strip", metavar="CKPT", help="instead of training: copy CKPT to --out without "
                   "optimizer state (a smaller file for shipping); --text is then not read")
    return p


def check_train_paths(args) -> None:
    """--text, --strip and --out before any work: an existing --out is replaced only with --force
    (or continued with --resume)."""
    from ..errors import ConfigError

    if args.strip:
        check_input_file(args.strip, "--strip")
    elif args.text != "-":
        check_input_file(args.text, "--text")
    if args.resume and args.force:
        raise ConfigError("--resume continues --out and --force replaces it: choose one")
    keep = args.force or (args.resume and not args.strip)
    check_output_file(args.out, "--out", force=keep, hint=" (or --resume to continue training it)"
                      if not args.strip else "")


@entry_point
def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--strip" in argv and "--text" not in argv:
        argv += ["--text", "-"]
    args = train_parser().parse_args(argv)
    check_train_paths(args)
    from ..checkpoint import load_checkpoint, save_checkpoint
    from ..model import BDHConfig
    from ..train import TrainSettings, train

    if args.strip:
        model, info = load_checkpoint(args.strip, log=log)
        save_checkpoint(args.out, model, info["meta"])
        log(f"wrote {args.out} (weights and metadata, no optimizer state)")
        return 0
    config = BDHConfig(n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_head,
                       mlp_internal_dim_multiplier=args.mult, dropout=args.dropout).validate()
    settings = TrainSettings(
        text=args.text, out=args.out, steps=args.steps, batch_size=args.batch_size,
        block_size=args.block_size, lr=args.lr, weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps, eval_every=args.eval_every, eval_windows=args.eval_windows,
        save_every=args.save_every, seed=args.seed, device=args.device, time_limit_s=args.time_limit,
        resume=args.resume, threads=args.threads,
    )
    train(settings, config, log=log)
    return 0
