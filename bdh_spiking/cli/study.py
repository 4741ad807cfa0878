"""bdh-study: the three experiments on the plastic working memory (docs/study.md)."""

from __future__ import annotations

import argparse

from .common import (Parser, check_input_file, check_output_dir, entry_point, log, nonneg_int, number_type,
                     positive_float, positive_int)


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _int_list0(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def study_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="bdh-study",
        description="Three experiments on the spiking network's plastic working memory: concept-selective "
                    "synapses, memory under frozen/reset/decaying plasticity, biological firing rates. "
                    "Writes DIR/report.md, DIR/results.json and PNG figures (docs/study.md), all at once at the end.",
        example="bdh-study --out study/ --quick",
    )
    p.add_argument("checkpoint", nargs="?", default=None, help="dense checkpoint (default: the shipped default model)")
    p.add_argument("--backend", default="reference", help="executor of the sweeps (only 'reference')")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (new, empty, or a previous "
                   "bdh-study report replaced with --force)")
    p.add_argument("--force", action="store_true", help="replace the previous report in --out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="CI-sized run (< 1 minute; numbers are not meaningful)")
    p.add_argument("--concepts", default=None, metavar="FILE",
                   help="one concept per line (backslash escapes such as \\n allowed); default: speaker names, "
                        "'the' and ':\\n'")
    p.add_argument("--text", default=None, help="study text (default: the shipped held-out sample)")
    p.add_argument("--token-ms", type=positive_float, default=100.0, help="presentation time of one character in ms (default 100)")
    p.add_argument("--dt-ms", type=positive_float, default=1.0, help="simulation step in ms (default 1, as the brian2 clock)")
    p.add_argument("--taus-ms", type=_float_list, default=None, metavar="T1,T2,...",
                   help="decay time constants in ms (default 300,1000,3000; --quick 200,1000,5000)")
    p.add_argument("--rates", type=_float_list, default=None, metavar="R1,R2,...",
                   help="presentation rates in characters/s (default 5,10,20); with --taus-ms they give the decay "
                        "points tau_tokens = tau_ms x rate / 1000, one axis")
    p.add_argument("--freeze-after", type=_int_list0, default=None, metavar="K1,...", help="default 64")
    p.add_argument("--reset-every", type=_int_list0, default=None, metavar="M1,...", help="default 32")
    p.add_argument("-T", "--timesteps", type=positive_int, default=8)
    p.add_argument("--max-spikes", type=positive_int, default=4)
    p.add_argument("--seq-len", type=positive_int, default=256, help="passage length (the model's block size)")
    p.add_argument("--max-tokens", type=positive_int, default=None, help="bytes for experiments 1 and 3 (default 4096)")
    p.add_argument("--sweep-tokens", type=positive_int, default=None, help="bytes for experiment 2 (default 4096)")
    p.add_argument("--shifts", type=positive_int, default=None,
                   help="decoy shifts: each concept's labels circularly shifted, tested as fake concepts (default 19; "
                        "--quick 5)")
    p.add_argument("--fdr", type=number_type(0.0, 1.0, True, True), default=0.05,
                   help="unused by experiment 1 since its test is family-wise (--alpha); kept for scripts")
    p.add_argument("--alpha", type=number_type(0.0, 1.0, True, True), default=0.05,
                   help="experiment 1: family-wise level of the maxT test (default 0.05)")
    p.add_argument("--permutations", type=positive_int, default=None,
                   help="experiment 1: label permutations within byte strata (default 100)")
    p.add_argument("--synapse-sample", type=positive_int, default=None,
                   help="experiment 1: synapses drawn per layer and family (default 2048; --quick 512); factors: all")
    p.add_argument("--top-k", type=positive_int, default=10)
    p.add_argument("--n-layer", type=positive_int, default=None)
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.add_argument("--task", choices=["language", "recall"], default="language",
                   help="'recall': the associative-recall study (default checkpoint: the shipped recall model; "
                        "see docs/study.md); 'language' (default): the three experiments on text")
    p.add_argument("--seeds", type=_int_list0, default=None, metavar="S1,...",
                   help="recall: conversion and episode seeds (default 0,1,2; --quick 0,1)")
    p.add_argument("--pairs", type=_int_list0, default=None, metavar="K1,...", help="recall: K (default 4,8,16; --quick 8)")
    p.add_argument("--gaps", type=_int_list0, default=None, metavar="G1,...",
                   help="recall: filler gaps (default 0,8,16,32,64; --quick 0,16)")
    p.add_argument("--episodes", type=positive_int, default=None, help="recall: episodes per cell (default 64; --quick 24)")
    p.add_argument("--bio-tokens", type=nonneg_int, default=None,
                   help="bytes of the window run in the brian2 biophysical network (3 plasticity conditions) when "
                        "brian2 is installed (default 32; --quick: 0; 0 skips it); --task recall: 0 skips its biophysical "
                        "points (50/100/200 ms per byte; skipped by default with --quick), any other value runs them")
    return p


STUDY_FILES = ("report.md", "results.json")


def check_study_paths(args) -> None:
    """Inputs exist; --out is new, empty, or a previous report (replaced whole with --force)."""
    from pathlib import Path

    from ..errors import ConfigError

    check_input_file(args.checkpoint, "checkpoint")
    check_input_file(args.text, "--text")
    check_input_file(args.concepts, "--concepts")
    check_output_dir(args.out, "--out")
    out = Path(args.out)
    if out.is_dir() and any(out.iterdir()):
        if not any((out / name).is_file() for name in STUDY_FILES):
            raise ConfigError(f"--out {out} holds files that are not a bdh-study report; it is replaced whole: "
                              "choose a new or empty directory")
        if not args.force:
            raise ConfigError(f"--out {out} holds a previous report: pass --force to replace it")


@entry_point
def main(argv=None):
    args = study_parser().parse_args(argv)
    from ..errors import ConfigError

    check_study_paths(args)
    from ..study import StudySettings, run_study, summary_lines

    if args.backend != "reference":
        raise ConfigError(f"bdh-study sweeps run on the reference executor (got --backend {args.backend!r}); "
                          "a brian2 'biophysical' mode is used automatically when it exists")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.task == "recall":
        return _recall(args)
    q = args.quick
    s = StudySettings(
        out=args.out, checkpoint=args.checkpoint, text=args.text, concepts_file=args.concepts, seed=args.seed,
        quick=q, timesteps=args.timesteps, max_spikes=args.max_spikes, seq_len=args.seq_len if not q else min(args.seq_len, 128),
        max_tokens=args.max_tokens or (256 if q else 4096), sweep_tokens=args.sweep_tokens or (256 if q else 4096),
        token_ms=args.token_ms, dt_ms=args.dt_ms,
        taus_ms=tuple(args.taus_ms or ((200.0, 1000.0, 5000.0) if q else (300.0, 1000.0, 3000.0))),
        rates_cps=tuple(args.rates or ((10.0,) if q else (5.0, 10.0, 20.0))),
        freeze_after=tuple(args.freeze_after or ((32,) if q else (64,))),
        reset_every=tuple(args.reset_every or (32,)),
        shifts=args.shifts or (5 if q else 19), fdr=args.fdr, top_k=args.top_k, n_layer=args.n_layer,
        alpha=args.alpha, permutations=args.permutations or 100,
        synapse_sample=args.synapse_sample or (512 if q else 2048),
        calibration_bytes=1024 if q else None, layers=None,
        bio_tokens=args.bio_tokens if args.bio_tokens is not None else (0 if q else 32),
    )
    results = run_study(s, log=log)
    for line in summary_lines(results):
        print(line)
    log(f"wrote {args.out}/report.md, {args.out}/results.json and {len(results['figures'])} figures")
    return 0


def _recall(args) -> int:
    """bdh-study --task recall: the associative-recall study (study/recall.py)."""
    from ..study.recall import RecallStudySettings
    from ..study.recall_report import run_recall_study

    q = args.quick
    s = RecallStudySettings(
        out=args.out, checkpoint=args.checkpoint, seeds=tuple(args.seeds or ((0, 1) if q else (0, 1, 2))),
        pairs=tuple(args.pairs or ((8,) if q else (4, 8, 16))), gaps=tuple(args.gaps or ((0, 16) if q else (0, 8, 16, 32, 64))),
        episodes=args.episodes or (24 if q else 64), taus=(1, 4, 16, 64) if q else (1, 2, 4, 8, 16, 32, 64, 128),
        timesteps=args.timesteps, max_spikes=args.max_spikes, n_boot=500 if q else 1000,
        rates_cps=tuple(args.rates or (5.0, 10.0, 20.0)), quick=q,
        probe_gaps=(16,) if q else (16, 64), probe_episodes=12 if q else 24,
        noise_taus=(4, 16, 64) if q else (2, 8, 32, 128), bio_episodes=1,
        bio_token_ms=() if (args.bio_tokens == 0 or (q and args.bio_tokens is None)) else (50.0, 100.0, 200.0))
    r = run_recall_study(s, log=log)["recall"]
    for c, v in r["accuracy"].items():
        print(f"recall {c}: accuracy {v:.3f} [{r['accuracy_ci'][c][0]:.3f}, {r['accuracy_ci'][c][1]:.3f}]")
    t = r["tau50_tokens"]
    print(f"recall tau50: {t['value']:.2f} tokens [{t['ci'][0]:.2f}, {t['ci'][1]:.2f}] (chance {r['chance']:.2f})")
    log(f"wrote {args.out}/report.md and {args.out}/results.json")
    return 0
