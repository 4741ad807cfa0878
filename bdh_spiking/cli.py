"""Command-line entry points. Argument parsing, one-line errors and progress only: no science."""

from __future__ import annotations

import argparse
import functools
import sys


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def entry_point(func):
    """Runs a CLI body; bad input becomes 'error: ...' on stderr and exit status 2."""

    @functools.wraps(func)
    def wrapper(argv=None):
        from .errors import BDHError

        try:
            return func(argv) or 0
        except BDHError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    def main(argv=None):
        sys.exit(wrapper(argv))

    main.run = wrapper
    return main


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump), exit status 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


# -- bdh-train -----------------------------------------------------------------------------
def train_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="bdh-train",
        description="Train a dense byte-level BDH on a text file (resumable, atomic checkpoints).",
    )
    p.add_argument("--text", required=True, help="training corpus (any bytes); last 10%% is validation")
    p.add_argument("--out", required=True, help="checkpoint to write (and to resume from with --resume)")
    p.add_argument("--resume", action="store_true", help="continue training from --out if it exists")
    p.add_argument("--steps", type=positive_int, default=3000, help="total optimizer steps (default 3000)")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--block-size", type=positive_int, default=256, help="training sequence length")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--eval-every", type=positive_int, default=250)
    p.add_argument("--eval-windows", type=positive_int, default=32,
                   help="validation windows used for the periodic estimate (the final one uses all)")
    p.add_argument("--save-every", type=positive_int, default=250)
    p.add_argument("--time-limit", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=1337)
    g = p.add_argument_group("model config (ignored with --resume: the checkpoint's config is used)")
    g.add_argument("--n-layer", type=positive_int, default=6)
    g.add_argument("--n-embd", type=positive_int, default=256)
    g.add_argument("--n-head", type=positive_int, default=4)
    g.add_argument("--mult", type=positive_int, default=128,
                   help="neurons per head = mult * n_embd / n_head (official name: mlp_internal_dim_multiplier)")
    g.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--strip", metavar="CKPT", help="instead of training: copy CKPT to --out without "
                   "optimizer state (a smaller file for shipping); --text is then not read")
    return p


@entry_point
def train_main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--strip" in argv and "--text" not in argv:
        argv += ["--text", "-"]
    args = train_parser().parse_args(argv)
    from .checkpoint import load_checkpoint, save_checkpoint
    from .model import BDHConfig
    from .train import TrainSettings, train

    if args.strip:
        model, info = load_checkpoint(args.strip, log=_log)
        save_checkpoint(args.out, model, info["meta"])
        _log(f"wrote {args.out} (weights and metadata, no optimizer state)")
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
    train(settings, config, log=_log)
    return 0


# -- bdh-convert ---------------------------------------------------------------------------
def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"timesteps must be integers >= 1, got {text!r}")
    return values


def add_network_args(p: argparse.ArgumentParser) -> None:
    """Input, network and simulation flags shared by bdh-convert and bdh-energy."""
    from .backends import backend_names

    p.add_argument("checkpoint", nargs="?", default=None,
                   help="dense checkpoint (own or official format); default: the shipped default model")
    p.add_argument("--backend", default="reference",
                   help=f"NAME[,NAME...] or 'all'; valid: {', '.join(backend_names())}")
    p.add_argument("--mode", choices=["discrete", "fixed-point", "biophysical"], default="discrete")
    p.add_argument("--coding", choices=["graded", "rate", "multispike"], default="multispike",
                   help="graded spikes, binary rate coding, or up to --max-spikes spikes per step (default)")
    p.add_argument("--max-spikes", type=positive_int, default=4, help="multispike: spikes per neuron per step")
    p.add_argument("--gating", choices=["gain", "product"], default=None,
                   help="fixed at conversion (default product: more accurate; gain: about half the spikes)")
    p.add_argument("--threshold", choices=["mse", "max", "quantile"], default=None,
                   help="threshold statistic, fixed at conversion (default mse: per neuron, the threshold "
                        "minimising the expected decoding error at --design-T steps with --max-spikes)")
    p.add_argument("--quantile", type=float, default=0.999, help="with --threshold quantile")
    p.add_argument("--design-T", type=positive_int, default=16, help="with --threshold mse")
    p.add_argument("-T", "--timesteps", type=positive_int, default=8, help="timesteps per token")
    p.add_argument("--text", default=None, help="evaluation text (default: the shipped held-out sample)")
    p.add_argument("--calibration", default=None, help="calibration text (default: the shipped sample)")
    p.add_argument("--max-tokens", type=positive_int, default=2048, help="evaluate at most this many bytes")
    p.add_argument("--seq-len", type=positive_int, default=256, help="cut --text into sequences of this length")
    p.add_argument("--n-layer", type=positive_int, default=None,
                   help="layer count (official checkpoints store none: default 6)")
    p.add_argument("--load", metavar="NET", default=None, help="load a converted network (skip conversion)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--brian2-target", choices=["auto", "cython", "numpy"], default="auto",
                   help="Brian2 code generation: auto (default) = cython when a C compiler works, else numpy "
                        "with a warning; compiled code is cached in ~/.cache/bdh-spiking/brian2")


def backend_options(args) -> dict:
    """Per-backend options from the shared flags."""
    return {"brian2": {"target": args.brian2_target}}


def simulation_args(args, timesteps=None):
    """(backends, device, dtype) from the shared flags; simulation settings checked before any work."""
    import torch

    from .backends import parse_backends
    from .device import resolve_device
    from .semantics import SimSettings

    for T in timesteps or []:
        SimSettings(timesteps=T, coding=args.coding, max_spikes=args.max_spikes, mode=args.mode).validate()
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    backends = parse_backends(args.backend)
    if "brian2" in backends:  # a bad target (or BDH_SPIKING_BRIAN2_TARGET) fails before any work
        from .backends.brian2.codegen import check_target

        check_target(args.brian2_target)
    return backends, resolve_device(args.device), dtype


def prepare_network(args):
    """(model, net, token ids, text name) from the shared flags; converts unless --load."""
    import torch

    from .checkpoint import load_checkpoint
    from .conversion import convert
    from .errors import ConfigError
    from .network import SpikingNetwork, dense_model
    from .text import read_bytes, shipped_text_path, windows

    torch.manual_seed(args.seed)
    if args.load:
        if args.checkpoint or args.calibration or args.gating or args.threshold:
            raise ConfigError("--load takes a converted network: checkpoint, --calibration, --gating and "
                              "--threshold were fixed when it was converted")
        net = SpikingNetwork.load(args.load)
        model = dense_model(net)
        _log(f"loaded network {args.load} (gating {net.gating}, calibrated on {net.calibration.get('text')})")
    else:
        model, info = load_checkpoint(args.checkpoint, n_layer=args.n_layer, log=_log)
        _log(f"model: {info['path']} ({info['format']} format) config {info['config']}")
        val = (info.get("meta") or {}).get("val_loss")
        if val is not None:
            _log(f"model: validation loss {val:.4f} nats/byte (recorded by bdh-train)")
        from pathlib import Path

        calibration = Path(args.calibration) if args.calibration else None
        net = convert(model, gating=args.gating or "product", calibration=calibration, seed=args.seed,
                      statistic=args.threshold or "mse", quantile=args.quantile, design_T=args.design_T,
                      design_max_spikes=(args.max_spikes if args.coding == "multispike"
                                         and getattr(args, "mode", None) != "biophysical" else 1),
                      progress=True)
        _log(f"converted in {net.provenance['conversion_seconds']:.2f} s "
             f"(calibration: {net.calibration['text']}, {net.calibration['bytes']} bytes)")
    if args.text:
        data, name = read_bytes(args.text, what="evaluation text"), args.text
    else:
        path = shipped_text_path("heldout")
        data, name = read_bytes(path), f"shipped:{path.name}"
    data = data[: args.max_tokens]
    seq_len = min(args.seq_len, len(data))
    ids = windows(data, seq_len)
    return model, net, ids, name


def convert_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="bdh-convert",
        description="Convert a dense BDH into a spiking network, run it on one or more backends and "
                    "report how closely it reproduces the dense model.",
    )
    add_network_args(p)
    p.add_argument("--sweep-T", type=int_list, default=None, metavar="T1,T2,...",
                   help="run every T in the list (plots fidelity vs T with --plots)")
    p.add_argument("--save", metavar="NET", help="write the converted network (.bdhsnn)")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON")
    p.add_argument("--plots", metavar="DIR", help="write PNG plots here")
    p.add_argument("--generate", type=positive_int, default=None, metavar="N",
                   help="sample N bytes from the spiking network (reference executor)")
    p.add_argument("--prompt", default="ROMEO:\n", help="prompt for --generate")
    p.add_argument("--no-graded", action="store_true", help="skip the graded T=1 structural check run")
    p.add_argument("--energy", action="store_true",
                   help="also print the energy-per-token table (bdh-energy) for the last T")
    p.add_argument("--profile", default=None, metavar="NAME|all|FILE",
                   help="hardware profile(s) for --energy: NAME[,NAME...], 'all' (default) or a .toml file")
    p.add_argument("--hardware-fit", default=None, metavar="PROFILE|all",
                   help="print the cores/chips the network needs on these profiles (bdh_spiking.hardware_fit); "
                        "printed for loihi2 whenever --backend includes lava")
    p.add_argument("--save-lava", metavar="DIR", default=None,
                   help="write what rebuilds the Lava process graph without the checkpoint (network file + "
                        "process graph JSON; needs pip install 'bdh-spiking[lava]')")
    p.add_argument("--export-nir", metavar="FILE", default=None,
                   help="also write the parts of the network NIR can express as a NIR graph (HDF5; needs "
                        "pip install 'bdh-spiking[nir]'); what NIR cannot hold is listed on stderr and in the file")
    b = p.add_argument_group("mode biophysical (--backend brian2; parameters: bdh_spiking/data/biophysical.toml)")
    b.add_argument("--token-ms", type=float, default=None, help="presentation time of one byte in ms")
    b.add_argument("--max-rate", type=float, default=None, help="firing rate (Hz) of a unit input current")
    b.add_argument("--noise", type=float, default=None, help="membrane noise std (threshold units)")
    b.add_argument("--bio-params", metavar="FILE", default=None, help="TOML file overriding the shipped parameters")
    b.add_argument("--sweep", metavar="PARAM=v1,v2,...", default=None,
                   help="run the report for each value of token-ms, max-rate or noise and plot fidelity vs it")
    b.add_argument("--record", metavar="spikes,v,weights", default=None,
                   help="monitors of chosen neurons/synapses; plotted into --plots")
    return p


@entry_point
def convert_main(argv=None):
    args = convert_parser().parse_args(argv)
    from .report import compare

    timesteps = args.sweep_T or [args.timesteps]
    backends, device, dtype = simulation_args(args, timesteps)
    energy_profiles = None
    if args.energy or args.profile is not None:
        from .energy import parse_profiles

        energy_profiles = parse_profiles(args.profile or "all")
    if args.export_nir:  # a missing nir fails before the runs
        from .nir_export import _import_nir

        _import_nir()
    model, net, ids, text_name = prepare_network(args)
    if args.mode == "fixed-point":
        from .conversion.quantize import describe, ensure_quantized, is_quantized, quantize

        net = ensure_quantized(net)[0] if is_quantized(net) else quantize(net)
        _log(f"quantized: {describe(net)}")
    fit_spec = args.hardware_fit or ("loihi2" if "lava" in backends else None)
    if fit_spec:  # bad profile names fail before the runs
        from .hardware_fit import fit_all, parse_fit_profiles, table

        fit_profiles = parse_fit_profiles(fit_spec)
    if args.mode == "biophysical" or args.sweep or args.record or args.bio_params or any(
            v is not None for v in (args.token_ms, args.max_rate, args.noise)):
        from .cli_biophysical import run_cli_biophysical

        return run_cli_biophysical(args, model, net, ids, backends, timesteps, device, dtype, text_name, _log)
    report = compare(model, net, ids, backends=backends, timesteps=timesteps, codings=[args.coding],
                     include_graded=not args.no_graded, mode=args.mode, max_spikes=args.max_spikes,
                     device=device, dtype=dtype, text_name=text_name, seed=args.seed, progress=True, log=_log,
                     backend_options=backend_options(args))
    print(report.table())
    if args.save_lava:
        from .backends import load_backend
        from .semantics import SimSettings

        lava = load_backend("lava")
        lava.save_process_graph(net, args.save_lava, SimSettings(timesteps=timesteps[-1], coding=args.coding,
                                                                 max_spikes=args.max_spikes, mode=args.mode))
        _log(f"wrote the Lava process graph to {args.save_lava} (rebuild: "
             "bdh_spiking.backends.lava_backend.simulate_saved(DIR, ids))")
    if report.meta.get("pairwise"):  # more than one backend ran
        print()
        print(report.pairwise_table())
    if fit_spec:
        print()
        print(table(fit_all(net, fit_profiles)))
    if energy_profiles is not None:
        from .energy import estimate

        print()
        print(estimate(model, net, ids, backends=backends, profiles=energy_profiles, timesteps=timesteps[-1],
                       coding=args.coding, mode=args.mode, max_spikes=args.max_spikes, device=device, dtype=dtype,
                       text_name=text_name, log=_log, backend_options=backend_options(args)).table())
    if args.generate:
        from .generate import generate

        text = generate(net, args.prompt, args.generate, timesteps=timesteps[-1], coding=args.coding,
                        max_spikes=args.max_spikes, device=device, seed=args.seed)
        print(f"\n--- sampled from the spiking network (reference, {args.coding}, T={timesteps[-1]}) ---")
        print(text)
    if args.export_nir:
        from .nir_export import export_nir, format_lost

        info = export_nir(net, args.export_nir, timesteps=timesteps[-1])
        _log(f"wrote NIR graph {args.export_nir} ({info['bytes']:,} bytes; nodes "
             f"{', '.join(f'{k} {v}' for k, v in sorted(info['nodes'].items()))}; T = {timesteps[-1]})")
        _log(format_lost(info["lost"]))
    if args.save:
        net.save(args.save)
        _log(f"wrote network {args.save}")
    if args.json:
        report.to_json(args.json)
        _log(f"wrote {args.json}")
    if args.plots:
        for path in report.plot(args.plots):
            _log(f"wrote {path}")
    return 0


# -- bdh-energy ----------------------------------------------------------------------------
def energy_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="bdh-energy",
        description="Energy per token of the spiking network on neuromorphic hardware profiles, counted from "
                    "each backend's actual spikes, next to the dense model on conventional hardware.",
    )
    add_network_args(p)
    p.add_argument("--profile", default="all", metavar="NAME|all|FILE",
                   help="hardware profile(s): NAME[,NAME...], 'all' (default) or a .toml profile file")
    p.add_argument("--json", metavar="FILE", help="write one row per backend x profile (and the dense baselines)")
    p.add_argument("--plots", metavar="DIR", help="write the energy-per-token plot here")
    return p


@entry_point
def energy_main(argv=None):
    args = energy_parser().parse_args(argv)
    from .energy import estimate, parse_profiles

    profiles = parse_profiles(args.profile)
    backends, device, dtype = simulation_args(args, [args.timesteps])
    model, net, ids, text_name = prepare_network(args)
    report = estimate(model, net, ids, backends=backends, profiles=profiles, timesteps=args.timesteps,
                      coding=args.coding, mode=args.mode, max_spikes=args.max_spikes, device=device, dtype=dtype,
                      text_name=text_name, progress=True, log=_log, backend_options=backend_options(args))
    print(report.table())
    if args.json:
        report.to_json(args.json)
        _log(f"wrote {args.json}")
    if args.plots:
        for path in report.plot(args.plots):
            _log(f"wrote {path}")
    return 0


# -- bdh-study -----------------------------------------------------------------------------
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
                    "Writes DIR/report.md, DIR/results.json and PNG figures (docs/study.md).",
    )
    p.add_argument("checkpoint", nargs="?", default=None, help="dense checkpoint (default: the shipped default model)")
    p.add_argument("--backend", default="reference", help="executor of the sweeps (only 'reference')")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="CI-sized run (< 1 minute; numbers are not meaningful)")
    p.add_argument("--concepts", default=None, metavar="FILE",
                   help="one concept per line (backslash escapes such as \\n allowed); default: speaker names, "
                        "'the' and ':\\n'")
    p.add_argument("--text", default=None, help="study text (default: the shipped held-out sample)")
    p.add_argument("--token-ms", type=float, default=100.0, help="presentation time of one character in ms (default 100)")
    p.add_argument("--dt-ms", type=float, default=1.0, help="simulation step in ms (default 1, as the brian2 clock)")
    p.add_argument("--taus-ms", type=_float_list, default=None, metavar="T1,T2,...",
                   help="decay time constants in ms (default 300,1000,3000)")
    p.add_argument("--rates", type=_float_list, default=None, metavar="R1,R2,...",
                   help="presentation rates in characters/s for the token-time sweep (default 5,10,20)")
    p.add_argument("--freeze-after", type=_int_list0, default=None, metavar="K1,...", help="default 64")
    p.add_argument("--reset-every", type=_int_list0, default=None, metavar="M1,...", help="default 32")
    p.add_argument("-T", "--timesteps", type=positive_int, default=8)
    p.add_argument("--max-spikes", type=positive_int, default=4)
    p.add_argument("--seq-len", type=positive_int, default=256, help="passage length (the model's block size)")
    p.add_argument("--max-tokens", type=positive_int, default=None, help="bytes for experiments 1 and 3 (default 4096)")
    p.add_argument("--sweep-tokens", type=positive_int, default=None, help="bytes for experiment 2 (default 4096)")
    p.add_argument("--shifts", type=positive_int, default=None, help="circular shifts in the null (default 19; one more is the decoy)")
    p.add_argument("--fdr", type=float, default=0.05)
    p.add_argument("--top-k", type=positive_int, default=10)
    p.add_argument("--n-layer", type=positive_int, default=None)
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.add_argument("--bio-tokens", type=int, default=None,
                   help="bytes of the window run in the brian2 biophysical network (3 plasticity conditions) when "
                        "brian2 is installed (default 32; --quick: 0; 0 skips it)")
    return p


@entry_point
def study_main(argv=None):
    args = study_parser().parse_args(argv)
    from .errors import ConfigError
    from .study import StudySettings, run_study, summary_lines

    if args.backend != "reference":
        raise ConfigError(f"bdh-study sweeps run on the reference executor (got --backend {args.backend!r}); "
                          "a brian2 'biophysical' mode is used automatically when it exists")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    q = args.quick
    s = StudySettings(
        out=args.out, checkpoint=args.checkpoint, text=args.text, concepts_file=args.concepts, seed=args.seed,
        quick=q, timesteps=args.timesteps, max_spikes=args.max_spikes, seq_len=args.seq_len if not q else min(args.seq_len, 128),
        max_tokens=args.max_tokens or (256 if q else 4096), sweep_tokens=args.sweep_tokens or (256 if q else 4096),
        token_ms=args.token_ms, dt_ms=args.dt_ms,
        taus_ms=tuple(args.taus_ms or ((1000.0,) if q else (300.0, 1000.0, 3000.0))),
        rates_cps=tuple(args.rates or ((10.0,) if q else (5.0, 10.0, 20.0))),
        freeze_after=tuple(args.freeze_after or ((32,) if q else (64,))),
        reset_every=tuple(args.reset_every or ((32,) if q else (32,))),
        shifts=args.shifts or (5 if q else 19), fdr=args.fdr, top_k=args.top_k, n_layer=args.n_layer,
        calibration_bytes=1024 if q else None, layers=(0,) if q else None,
        bio_tokens=args.bio_tokens if args.bio_tokens is not None else (0 if q else 32),
    )
    results = run_study(s, log=_log)
    for line in summary_lines(results):
        print(line)
    _log(f"wrote {args.out}/report.md, {args.out}/results.json and {len(results['figures'])} figures")
    return 0
