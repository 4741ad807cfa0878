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


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """--help shows each option's default (unless None/False or already in its help) and keeps the
    example epilog's line breaks."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("default" in text or default in (None, False, argparse.SUPPRESS) or not action.option_strings
                or isinstance(action, argparse._HelpAction)):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump), exit status 2, defaults in --help and an
    example epilog (``example=``)."""

    def __init__(self, *args, example: str | None = None, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        if example:
            kwargs["epilog"] = "example:\n  " + example
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def number_type(low: float | None = None, high: float | None = None, low_open: bool = False,
                high_open: bool = False, integer: bool = False):
    """An argparse type: a finite number (an integer if ``integer``) within [low, high] (ends open
    where asked)."""
    import math

    lo_sym, hi_sym = ("(" if low_open else "["), (")" if high_open else "]")
    lo_text, hi_text = ("-inf" if low is None else f"{low:g}"), ("inf" if high is None else f"{high:g}")
    span = f"in {lo_sym}{lo_text}, {hi_text}{hi_sym}" if low is not None or high is not None else "finite"

    def parse(text: str):
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if integer else 'a number'}, "
                                             f"got {text!r}") from None
        bad = not math.isfinite(value) or (low is not None and (value < low or (low_open and value == low))) or \
            (high is not None and (value > high or (high_open and value == high)))
        if bad:
            raise argparse.ArgumentTypeError(f"must be {span}, got {text}")
        return value

    parse.__name__ = "integer" if integer else "number"
    return parse


positive_float = number_type(0.0, low_open=True)
nonneg_float = number_type(0.0)
nonneg_int = number_type(0, integer=True)


def _nearest_existing(path):
    from pathlib import Path

    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _can_create_in(directory) -> bool:
    """Whether a file can be created in ``directory`` (tried, not guessed: permissions, read-only
    mounts and pseudo file systems all answer the same way)."""
    import os
    import tempfile

    try:
        fd, probe = tempfile.mkstemp(prefix=".bdh-write-probe.", dir=directory)
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


def check_output_file(path, flag: str, force: bool = True, hint: str = "") -> None:
    """Refuses (ConfigError, before any work) an output file that cannot be written: a directory
    there, a file where a parent directory should be, an unwritable directory, or (force=False)
    an existing file."""
    import os
    from pathlib import Path

    from ..errors import ConfigError

    if path is None:
        return
    p = Path(path)
    if str(path) == "" or p.is_dir():
        raise ConfigError(f"{flag} {path!r}: expected a file name, got {'a directory' if str(path) else 'nothing'}")
    if p.exists() and not force:
        raise ConfigError(f"{flag} {path} exists: pass --force to replace it{hint}")
    base = _nearest_existing(p.parent)
    if not base.is_dir():
        raise ConfigError(f"{flag} {path}: {base} is a file, not a directory")
    if not _can_create_in(base) or (p.exists() and not os.access(p, os.W_OK)):
        raise ConfigError(f"{flag} {path}: not writable (cannot create files in {base})")


def check_output_dir(path, flag: str, allowed: tuple | None = None) -> None:
    """Refuses an output directory that cannot be written: a file there, an unwritable parent, or
    (``allowed`` given) a directory holding files other than those names."""
    from pathlib import Path

    from ..errors import ConfigError

    if path is None:
        return
    p = Path(path)
    if str(path) == "":
        raise ConfigError(f"{flag}: expected a directory name, got nothing")
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{flag} {path} is a file, not a directory")
    base = _nearest_existing(p.absolute().parent)  # directories are staged beside their target
    if not base.is_dir():
        raise ConfigError(f"{flag} {path}: {base} is a file, not a directory")
    for where in (base, p) if p.is_dir() else (base,):
        if not _can_create_in(where):
            raise ConfigError(f"{flag} {path}: not writable (cannot create files in {where})")
    if allowed is not None and p.is_dir():
        other = sorted(c.name for c in p.iterdir() if c.name not in allowed)
        if other:
            raise ConfigError(f"{flag} {path} holds other files ({', '.join(other[:3])}); it is written whole: "
                              "choose a new or empty directory")


def check_input_file(path, flag: str) -> None:
    """Refuses a missing input file, or a directory where a file is expected."""
    from pathlib import Path

    from ..errors import ConfigError

    if path is None:
        return
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{flag} {path}: file not found")
    if p.is_dir():
        raise ConfigError(f"{flag} {path} is a directory, expected a file")


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
    p.add_argument("--force", action="store_true",
                   help="replace existing output files (--json, --save, --export-nir); without it they are refused "
                        "before any work")
    p.add_argument("--mode", choices=["discrete", "fixed-point", "biophysical"], default="discrete")
    p.add_argument("--coding", choices=["graded", "rate", "multispike"], default="multispike",
                   help="graded spikes, binary rate coding, or up to --max-spikes spikes per step (default)")
    p.add_argument("--max-spikes", type=positive_int, default=4, help="multispike: spikes per neuron per step")
    p.add_argument("--gating", choices=["gain", "product"], default=None,
                   help="fixed at conversion (default product: more accurate; gain: about half the spikes)")
    p.add_argument("--threshold", choices=["mse", "max", "quantile"], default=None,
                   help="threshold statistic, fixed at conversion (default mse: per neuron, the threshold "
                        "minimising the expected decoding error at --design-T steps with --max-spikes)")
    p.add_argument("--quantile", type=number_type(0.0, 1.0, low_open=True), default=0.999,
                   help="with --threshold quantile")
    p.add_argument("--design-T", type=positive_int, default=16, help="with --threshold mse")
    p.add_argument("-T", "--timesteps", type=positive_int, default=8, help="timesteps per token")
    p.add_argument("--text", default=None, help="evaluation text (default: the shipped held-out sample)")
    p.add_argument("--calibration", default=None, help="calibration text (default: the shipped sample)")
    p.add_argument("--max-tokens", type=positive_int, default=2048, help="evaluate at most this many bytes")
    p.add_argument("--seq-len", type=number_type(2, integer=True), default=256,
                   help="cut --text into sequences of this length (>= 2)")
    p.add_argument("--n-layer", type=positive_int, default=None,
                   help="layer count (official checkpoints store none: default 6)")
    p.add_argument("--load", metavar="NET", default=None, help="load a converted network (skip conversion)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=["float64", "float32"], default=None,
                   help="default: float64; float32 for snntorch and norse on cuda (the report row says which)")
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
    dtype = None if args.dtype is None else torch.float64 if args.dtype == "float64" else torch.float32
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
    ids, name = evaluation_ids(args)  # a degenerate evaluation text fails before the conversion
    if args.load:
        if args.checkpoint or args.calibration or args.gating or args.threshold:
            raise ConfigError("--load takes a converted network: checkpoint, --calibration, --gating and "
                              "--threshold were fixed when it was converted")
        net = SpikingNetwork.load(args.load)
        model = dense_model(net)
        log(f"loaded network {args.load} (gating {net.gating}, calibrated on {net.calibration.get('text')})")
    else:
        model, net = convert_checkpoint(args)
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
                  progress=True, log=log)
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
    if seq_len < 2:
        from ..errors import TextError

        raise TextError(f"evaluation text {name}: {len(data)} byte(s) (--max-tokens {args.max_tokens}, --seq-len "
                        f"{args.seq_len}); an evaluation needs sequences of at least 2 bytes (one prediction)")
    return windows(data, seq_len), name


def check_network_outputs(args) -> None:
    """The input and output paths of bdh-convert and bdh-energy, checked before any work."""
    check_input_file(args.checkpoint, "checkpoint")
    check_input_file(args.load, "--load")
    check_input_file(args.text, "--text")
    check_input_file(args.calibration, "--calibration")
    for flag in ("json", "save", "export_nir"):
        check_output_file(getattr(args, flag, None), "--" + flag.replace("_", "-"), force=args.force)
    check_output_dir(args.plots, "--plots")
    if getattr(args, "save_lava", None):
        check_output_dir(args.save_lava, "--save-lava", allowed=("network.bdhsnn", "lava_graph.json"))


def write_outputs(report, args) -> None:
    """--json and --plots of a report (compare's or estimate's); the plots are drawn into a
    staging directory and moved in only when all are drawn."""
    from ..fileio import staged_files

    if args.json:
        report.to_json(args.json)
        log(f"wrote {args.json}")
    if args.plots:
        with staged_files(args.plots) as tmp:
            names = [path.name for path in report.plot(tmp)]
        for name in names:
            log(f"wrote {args.plots}/{name}")
