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
    add_spiking_aware_args(p)
    add_constraint_args(p)
    p.add_argument("--task", choices=["text", "recall"], default="text",
                   help="'recall': train on the associative-recall task (bdh_spiking.tasks.recall; loss on the "
                        "answer bytes plus a previous-key hint; --text is not read; unless given, L=2 D=64 H=2 "
                        "mult=8 dropout=0, 1000 steps (curriculum 300), batch 32, lr 6e-3, weight decay 0, "
                        "warmup 50, K <= 8, G <= 32; RECALL_MODEL_CARD.md)")
    p.add_argument("--max-pairs", type=positive_int, default=None, help="recall: largest K drawn in training")
    p.add_argument("--max-gap", type=nonneg_int, default=None, help="recall: largest filler gap G drawn in training")
    p.add_argument("--curriculum-steps", type=int, default=None,
                   help="recall: the largest K and G grow linearly from (2, 0) over these steps")
    p.add_argument("--freeze-fraction", type=number_type(0.0, 1.0), default=None,
                   help="recall: share of training episodes whose writes stop after the study phase (default 0.3)")
    p.add_argument("--prev-key-weight", type=number_type(0.0, 100.0), default=None,
                   help="recall: weight of the auxiliary loss naming the key before each study value (default 1; 0: off)")
    p.add_argument("--strip", metavar="CKPT", help="instead of training: copy CKPT to --out without "
                   "optimizer state (a smaller file for shipping); --text is then not read")
    return p


def add_spiking_aware_args(p: argparse.ArgumentParser) -> None:
    """--init, --spiking-aware T, --max-spikes K (fine-tuning through the converted network)."""
    g = p.add_argument_group("fine-tuning (spiking-aware: docs/spiking-aware.md)")
    g.add_argument("--init", metavar="CKPT", default=None,
                   help="start from CKPT's weights and config (a new run: step 0, new optimizer); with "
                        "--resume an existing --out is resumed instead")
    g.add_argument("--spiking-aware", type=positive_int, default=None, metavar="T",
                   help="train through the activations the converted network computes at T timesteps "
                        "(product gating, thresholds calibrated on the training split); the checkpoint "
                        "records T, K and the thresholds, which bdh-convert then uses")
    g.add_argument("--max-spikes", type=positive_int, default=4, metavar="K",
                   help="with --spiking-aware: spikes per neuron per step (1: binary rate coding; default 4)")
    g.add_argument("--consistency", type=float, default=0.0, metavar="W",
                   help="with --spiking-aware: add W * KL(plain forward || quantized forward) to the loss "
                        "(pulls the converted network towards the plain model; default 0)")


def add_constraint_args(p: argparse.ArgumentParser) -> None:
    """--constraints RUNG, --bio-params FILE (fine-tuning through a rung of the biophysical ladder)."""
    g = p.add_argument_group("fine-tuning under a biological constraint (docs/spiking-aware.md)")
    g.add_argument("--constraints", metavar="RUNG", default=None,
                   help="with --init: train through the activation the biophysical network at this rung of "
                        "the fidelity ladder decodes (rate-linearized: clipped linear rate; lif: the LIF f-I "
                        "curve; psc: the curve's rate read linearly); the checkpoint records the rung and its thresholds, which bdh-convert uses")
    g.add_argument("--bio-params", metavar="FILE", default=None,
                   help="with --constraints: biophysical parameters (as bdh-convert --bio-params; default: "
                        "the shipped bdh_spiking/data/biophysical.toml)")


def check_constraint_args(args) -> dict | None:
    """--constraints before any work: a rung with a dense form, --init given, not with
    --spiking-aware, --task recall or --strip; returns the validated biophysical parameters."""
    from ..errors import ConfigError

    if not args.constraints:
        if args.bio_params:
            raise ConfigError("--bio-params is read with --constraints only")
        return None
    from ..semantics.constraints import check_rung

    check_rung(args.constraints)
    if args.strip or args.task != "text":
        raise ConfigError("--constraints fine-tunes a text model: not with --strip or --task recall")
    if not args.init:
        raise ConfigError("--constraints fine-tunes a trained model: give it with --init CKPT")
    if args.spiking_aware:
        raise ConfigError("--constraints and --spiking-aware each replace the activation: choose one")
    if args.bio_params:
        check_input_file(args.bio_params, "--bio-params")
    from ..backends.brian2.params import load_params

    return load_params(args.bio_params)


def check_train_paths(args) -> None:
    """--text, --strip and --out before any work: an existing --out is replaced only with --force
    (or continued with --resume)."""
    from ..errors import ConfigError

    if args.strip:
        check_input_file(args.strip, "--strip")
    elif args.text != "-":
        check_input_file(args.text, "--text")
    if args.init:
        check_input_file(args.init, "--init")
    if args.resume and args.force:
        raise ConfigError("--resume continues --out and --force replaces it: choose one")
    keep = args.force or (args.resume and not args.strip)
    check_output_file(args.out, "--out", force=keep, hint=" (or --resume to continue training it)"
                      if not args.strip else "")


@entry_point
def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    recall = "--task=recall" in argv or any(a == "--task" and b == "recall" for a, b in zip(argv, argv[1:]))
    if ("--strip" in argv or recall) and "--text" not in argv:
        argv += ["--text", "-"]
    args = train_parser().parse_args(argv)
    check_train_paths(args)
    bio_params = check_constraint_args(args)
    from ..checkpoint import load_checkpoint, save_checkpoint
    from ..model import BDHConfig
    from ..train import TrainSettings, train

    if args.strip:
        model, info = load_checkpoint(args.strip, log=log)
        save_checkpoint(args.out, model, info["meta"])
        log(f"wrote {args.out} (weights and metadata, no optimizer state)")
        return 0
    if args.task == "recall":
        return _train_recall(args, argv)
    config = BDHConfig(n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_head,
                       mlp_internal_dim_multiplier=args.mult, dropout=args.dropout).validate()
    settings = TrainSettings(
        text=args.text, out=args.out, steps=args.steps, batch_size=args.batch_size,
        block_size=args.block_size, lr=args.lr, weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps, eval_every=args.eval_every, eval_windows=args.eval_windows,
        save_every=args.save_every, seed=args.seed, device=args.device, time_limit_s=args.time_limit,
        resume=args.resume, threads=args.threads, init=args.init, spiking_aware=args.spiking_aware,
        max_spikes=args.max_spikes, consistency=args.consistency, constraints=args.constraints,
        bio_params=bio_params,
    )
    train(settings, config, log=log)
    return 0


RECALL_MAX_PAIRS = 8
RECALL_MAX_GAP = 32
RECALL_CURRICULUM = 300
RECALL_FREEZE_FRACTION = 0.3
RECALL_PREV_KEY_WEIGHT = 1.0
RECALL_DEFAULTS = {"n_layer": 2, "n_embd": 64, "n_head": 2, "mult": 8, "dropout": 0.0, "steps": 1000,
                   "batch_size": 32, "lr": 6e-3, "weight_decay": 0.0, "warmup_steps": 50}


def _train_recall(args, argv: list) -> int:
    """bdh-train --task recall: the recall defaults for every flag not given on the command line."""
    from ..model import BDHConfig
    from ..train import RecallTrainSettings, train_recall

    given = {a.split("=")[0].lstrip("-").replace("-", "_") for a in argv if a.startswith("--")}
    v = {k: (getattr(args, k) if k in given else d) for k, d in RECALL_DEFAULTS.items()}
    config = BDHConfig(n_layer=v["n_layer"], n_embd=v["n_embd"], n_head=v["n_head"],
                       mlp_internal_dim_multiplier=v["mult"], dropout=v["dropout"]).validate()
    settings = RecallTrainSettings(out=args.out, steps=v["steps"], batch_size=v["batch_size"], lr=v["lr"],
                                   weight_decay=v["weight_decay"], warmup_steps=v["warmup_steps"],
                                   eval_every=args.eval_every, seed=args.seed, device=args.device,
                                   time_limit_s=args.time_limit, threads=args.threads,
                                   max_pairs=args.max_pairs or RECALL_MAX_PAIRS,
                                   max_gap=RECALL_MAX_GAP if args.max_gap is None else args.max_gap,
                                   curriculum_steps=RECALL_CURRICULUM if args.curriculum_steps is None
                                   else args.curriculum_steps, repeat_queries=True,
                                   freeze_fraction=RECALL_FREEZE_FRACTION if args.freeze_fraction is None
                                   else args.freeze_fraction,
                                   prev_key_weight=RECALL_PREV_KEY_WEIGHT if args.prev_key_weight is None
                                   else args.prev_key_weight)
    train_recall(settings, config, log=log)
    return 0
