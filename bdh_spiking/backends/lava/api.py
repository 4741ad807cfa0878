"""The Lava backend's entry point ``simulate`` (fused or explicit graph), and saving / rebuilding a
graph from a directory (lava_graph.json + network.bdhsnn)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ...errors import ConfigError, NetworkFormatError
from ...fileio import atomic_dir, atomic_write_text
from ...semantics import Plasticity, SimSettings
from ...semantics.quantize import ensure_quantized
from ..base import SimulationResult
from ..registry import RECORDABLE, normalize_ids, normalize_record
from .explicit_graph import run_explicit
from .explicit_spec import make_explicit_spec
from .graph import run_spec as run_fused
from .spec import GRAPH_FORMAT, GRAPH_VERSION, NETWORK_FILE, lowering, make_spec

GRAPH_FILE = "lava_graph.json"
LAVA_GRAPHS = ("fused", "explicit")


def check_graph(lava_graph: str) -> str:
    if lava_graph not in LAVA_GRAPHS:
        raise ConfigError(f"lava_graph must be one of {', '.join(LAVA_GRAPHS)}, got {lava_graph!r}")
    return lava_graph


def spec_of(net, settings: SimSettings, plasticity: Plasticity | None, lava_graph: str) -> dict:
    """The description of the graph asked for: fused (one process per layer) or explicit."""
    maker = make_explicit_spec if check_graph(lava_graph) == "explicit" else make_spec
    return maker(net, settings, plasticity)


def run_spec(net, spec: dict, ids: torch.Tensor, record=(), progress: bool = False,
             how: str | None = None) -> SimulationResult:
    """Builds and runs the graph ``spec`` describes (either kind) on token ids (B, n)."""
    runner = run_explicit if spec.get("graph") == "explicit" else run_fused
    return runner(net, spec, ids, record=record, progress=progress, how=how)


def simulate(net, ids, settings, device="cpu", record=(), plasticity=None, dtype=torch.float64,
             progress=False, save_lava_dir=None, lava_graph="fused"):
    """The backend entry point (called by ``backends.simulate``, which has checked every input and
    quantized a float network for mode 'fixed-point'): the graph of ``settings.mode`` (fused, or
    explicit: one process per population and projection), run on Lava's CPU simulator;
    ``save_lava_dir`` also writes it to a directory (``save_process_graph``)."""
    spec = spec_of(net, settings, plasticity, lava_graph)
    if save_lava_dir:
        save_process_graph(net, save_lava_dir, settings, plasticity, lava_graph)
    return run_spec(net, spec, ids, record=record, progress=progress)


def save_process_graph(net, directory, settings: SimSettings | None = None,
                       plasticity: Plasticity | None = None, lava_graph: str = "fused") -> Path:
    """Writes ``network.bdhsnn`` (the network, no checkpoint needed) and ``lava_graph.json``
    (processes, ports, connections, schedule, settings) into ``directory``; returns the JSON path.
    For mode 'fixed-point' the saved network carries its integer tables (quantized here if need be)."""
    settings = (settings or SimSettings()).validate()
    if lowering(settings.mode).integer:
        net, _ = ensure_quantized(net)
    spec = spec_of(net, settings, plasticity, lava_graph)
    directory = Path(directory)
    check_graph_dir(directory)
    with atomic_dir(directory) as tmp:  # both files appear together, or the old pair stays
        net.save(tmp / NETWORK_FILE)
        atomic_write_text(tmp / GRAPH_FILE, json.dumps(spec, indent=1, allow_nan=False) + "\n")
    return directory / GRAPH_FILE


def check_graph_dir(directory) -> None:
    """A process graph directory is written whole: refuses a file there, or a directory holding
    anything but a previous graph (which it replaces)."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory} is a file, not a directory for the Lava process graph")
    other = sorted(p.name for p in directory.iterdir() if p.name not in (NETWORK_FILE, GRAPH_FILE)) \
        if directory.is_dir() else []
    if other:
        raise ConfigError(f"{directory} holds files other than a Lava process graph ({', '.join(other[:3])}); "
                          "choose a new or empty directory")


def load_process_graph(directory):
    """(net, spec) from a directory written by ``save_process_graph``."""
    from ...network import SpikingNetwork

    directory = Path(directory)
    path = directory / GRAPH_FILE
    if not path.is_file():
        raise NetworkFormatError(f"no Lava process graph in {directory} (missing {GRAPH_FILE})")
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise NetworkFormatError(f"corrupt Lava process graph {path}: {exc}") from None
    if spec.get("format") != GRAPH_FORMAT:
        raise NetworkFormatError(f"{path} is not a bdh-spiking Lava process graph")
    if not isinstance(spec.get("format_version"), int) or spec["format_version"] > GRAPH_VERSION:
        raise NetworkFormatError(f"{path} has Lava graph format version {spec.get('format_version')}, newer "
                                 f"than this bdh-spiking reads ({GRAPH_VERSION})")
    net = SpikingNetwork.load(directory / spec.get("network", NETWORK_FILE))
    if net.dims.as_dict() != spec["dims"] or net.gating != spec["gating"]:
        raise NetworkFormatError(f"{path} does not describe the network stored beside it")
    return net, spec


def simulate_saved(directory, ids, record=(), progress: bool = False) -> SimulationResult:
    """Rebuilds the saved process graph (fused or explicit) and runs it on token ids (T,) or (B, T)."""
    net, spec = load_process_graph(directory)
    ids = normalize_ids(ids, net.dims.V)
    record = normalize_record(record, RECORDABLE)
    how = "saved quantized network" if lowering(spec["settings"]["mode"]).integer else None
    return run_spec(net, spec, ids, record=record, progress=progress, how=how)
