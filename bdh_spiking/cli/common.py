"""What every command shares: the one-line error and exit status, argparse types, the network and
simulation flags of bdh-convert and bdh-energy, their checks before any work, and progress lines."""

from __future__ import annotations

import argparse
import functools
import sys


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def entry_point(func):
    """Runs a CLI body; bad input becomes 'error: ...' on stderr and exit status 2."""

    @functools.wraps(func)
    def wrapper(argv=None):
        from ..errors import BDHError

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
    from ..backends import backend_names

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
    p.add_argument("--lava-graph", choices=["fused", "explicit"], default="fused",
                   help="Lava process graph: fused (default; one process per layer, fast) or explicit (one process "
                        "per population and projection, Lava's Dense for the static projections; slow)")


def backend_options(args) -> dict:
    """Per-backend options from the shared flags."""
    return {"brian2": {"target": args.brian2_target}, "lava": {"lava_graph": getattr(args, "lava_graph", "fused")}}


def simulation_args(args, timesteps=None):
    """(backends, device, dtype) from the shared flags; simulation settings checked before any work."""
    import torch

    from ..backends import parse_backends
    from ..device import resolve_device
    from ..semantics import SimSettings

    for T in timesteps or []:
        SimSettings(timesteps=T, coding=args.coding, max_spikes=args.max_spikes, mode=args.mode).validate()
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    backends = parse_backends(args.backend)
    if "brian2" in backends:  # a bad target (or BDH_SPIKING_BRIAN2_TARGET) fails before any work
        from ..backends.brian2 import check_target

        check_target(args.brian2_target)
    return backends, resolve_device(args.device), dtype


def refuse(conflicts) -> None:
    """One ConfigError naming the first (condition, message) pair whose condition holds."""
    from ..errors import ConfigError

    for condition, message in conflicts:
        if condition:
            raise ConfigError(message)


def prepare_network(args):
    """(model, net, token ids, text name) from the shared flags; converts unless --load."""
    import torch

    from ..errors import ConfigError
    from ..network import SpikingNetwork, dense_model

    torch.manual_seed(args.seed)
    if args.load:
        if args.checkpoint or args.calibration or args.gating or args.threshold:
            raise ConfigError("--load takes a converted network: checkpoint, --calibration, --gating and "
                              "--threshold were fixed when it was converted")
        net = SpikingNetwork.load(args.load)
        model = dense_model(net)
        log(f"loaded network {args.load} (gating {net.gating}, calibrated on {net.calibration.get('text')})")
    else:
        model, net = convert_checkpoint(args)
    ids, name = evaluation_ids(args)
    return model, net, ids, name


def convert_checkpoint(args):
    """(model, net): the checkpoint of the flags, converted with the flags' conversion settings."""
    from pathlib import Path

    from ..checkpoint import load_checkpoint
    from ..conversion import convert

    model, info = load_checkpoint(args.checkpoint, n_layer=args.n_layer, log=log)
    log(f"model: {info['path']} ({info['format']} format) config {info['config']}")
    val = (info.get("meta") or {}).get("val_loss")
    if val is not None:
        log(f"model: validation loss {val:.4f} nats/byte (recorded by bdh-train)")
    calibration = Path(args.calibration) if args.calibration else None
    net = convert(model, gating=args.gating or "product", calibration=calibration, seed=args.seed,
                  statistic=args.threshold or "mse", quantile=args.quantile, design_T=args.design_T,
                  design_max_spikes=(args.max_spikes if args.coding == "multispike"
                                     and getattr(args, "mode", None) != "biophysical" else 1),
                  progress=True)
    log(f"converted in {net.provenance['conversion_seconds']:.2f} s "
        f"(calibration: {net.calibration['text']}, {net.calibration['bytes']} bytes)")
    return model, net


def evaluation_ids(args):
    """(token ids, text name): --text (or the shipped held-out sample), cut to --max-tokens."""
    from ..text import read_bytes, shipped_text_path, windows

    if args.text:
        data, name = read_bytes(args.text, what="evaluation text"), args.text
    else:
        path = shipped_text_path("heldout")
        data, name = read_bytes(path), f"shipped:{path.name}"
    data = data[: args.max_tokens]
    seq_len = min(args.seq_len, len(data))
    return windows(data, seq_len), name


def write_outputs(report, args) -> None:
    """--json and --plots of a report (compare's or estimate's)."""
    if args.json:
        report.to_json(args.json)
        log(f"wrote {args.json}")
    if args.plots:
        for path in report.plot(args.plots):
            log(f"wrote {path}")
