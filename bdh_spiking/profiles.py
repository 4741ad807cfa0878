"""Hardware energy/capacity profiles: what one event costs on a given chip, and what fits on it.

A profile is one TOML file. The shipped ones live in the top-level ``hardware_profiles/``
folder (installed as ``bdh_spiking.hardware_profiles``); a user profile is any ``.toml`` file
given by path::

    from bdh_spiking.profiles import load_profile, list_profiles
    list_profiles()                      # ['cpu', 'digital45nm', 'gpu', 'loihi', ...]
    p = load_profile("loihi")            # or load_profile("path/to/my_chip.toml")
    p.joules("synaptic_op")              # 2.36e-11 (joules per event)
    p.energy["synaptic_op"].source       # where the number comes from

Schema (version 1). Top level: optional ``schema_version = 1`` and the tables ``[device]``
(required), ``[energy]`` (required) and ``[capacity]`` (optional); anything else is an error.

``[device]``
    ``name`` (required, text), ``kind`` (required: ``"neuromorphic"`` or ``"conventional"``),
    ``technology`` and ``notes`` (optional text).

``[energy]`` -- one entry per event type, each an inline table::

    synaptic_op = { value = 23.6e-12, source = "Davies et al. 2018, IEEE Micro 38(1), Table 2",
                    year = 2018, basis = "simulated", note = "..." }

    ``value``       required; JOULES PER EVENT (plain SI joules, no unit suffix), finite and >= 0.
    ``source``      required; citation precise enough to find the number (paper, table, page).
    ``year``        required; integer year of that source.
    ``assumption``  optional bool (default false): no published figure, the value is reasoned.
    ``verified``    optional bool (default true): false when the number could not be checked
                    against its source when the file was written.
    ``basis``       optional: ``measured`` (silicon measurement), ``simulated`` (pre-silicon
                    circuit simulation), ``estimated`` (published technology estimate),
                    ``derived`` (arithmetic on published figures, shown in the note) or
                    ``assumed`` (must go with ``assumption = true`` and back).
    ``note``        optional text; REQUIRED when ``assumption = true`` or ``verified = false``.

    Entry names are a fixed vocabulary (:data:`ENERGY_EVENTS`, each documented there); a name
    outside it is an error unless it starts with ``x_`` (a private extension that standard
    consumers ignore). An absent entry means "no figure for this device" -- consumers must
    report it as unavailable, never treat it as zero. Entries of one profile are additive:
    where a published figure already contains another event's cost, that other entry is
    present with value 0 and ``assumption = true`` (see TrueNorth).

``[capacity]`` -- optional; same entry fields (``value`` is a count, in bits or bytes as the
    name says), names from :data:`CAPACITY_FIELDS` or ``x_``-prefixed.

Any violation raises :class:`bdh_spiking.errors.ProfileError` with a one-line message naming the
file and the field, e.g. ``profile my_chip.toml: energy.synaptic_op.value must be a non-negative
number, got 'abc'``. The same schema, with the physical meaning of every event, is described for
profile authors in ``hardware_profiles/README.md``.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Union

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the tomli backport (a dependency there)
    import tomli as tomllib

from .errors import ProfileError

__all__ = [
    "SCHEMA_VERSION",
    "KINDS",
    "BASES",
    "ENERGY_EVENTS",
    "CAPACITY_FIELDS",
    "EnergyEntry",
    "CapacityEntry",
    "Profile",
    "load_profile",
    "list_profiles",
    "load_all",
    "profiles_dir",
]

SCHEMA_VERSION = 1
KINDS = ("neuromorphic", "conventional")
BASES = ("measured", "simulated", "estimated", "derived", "assumed")
EXTENSION_PREFIX = "x_"

#: Energy event names and what one event is. Values are joules per event.
ENERGY_EVENTS: dict[str, str] = {
    # Spiking events (neuromorphic chips; also defined on reference logic by convention).
    "synaptic_op": "one binary spike delivered to one synapse (weight read + accumulate); "
    "count = spikes x fan-out",
    "graded_synaptic_op": "one graded spike (carrying a payload) delivered to one synapse "
    "(weight read + payload x weight + accumulate)",
    "spike_hop": "one spike packet moved one router hop between cores/tiles; "
    "count = spikes routed x hops per spike",
    "spike_local": "one spike packet delivered inside its own core/tile (no mesh hop)",
    "neuron_update": "one neuron (compartment) state update in one timestep, neuron active",
    "neuron_update_inactive": "one neuron state update in one timestep with no input "
    "(where cheaper than an active update)",
    "plastic_update": "one learning update of one plastic (Hebbian/STDP) synapse",
    # Dense arithmetic (conventional baselines). Unsuffixed = FP32; MAC = 2 FLOPs.
    "flop": "one FP32 floating-point operation (half an FP32 MAC)",
    "mac": "one FP32 multiply-accumulate",
    "add": "one FP32 add (the 'AC' of SNN energy accounting)",
    "mult": "one FP32 multiply",
    "flop_bf16": "one BF16 floating-point operation (tensor units where available)",
    "mac_bf16": "one BF16 multiply-accumulate",
    "mac_fp16": "one FP16 multiply-accumulate",
    "add_fp16": "one FP16 add",
    "mult_fp16": "one FP16 multiply",
    "mac_int8": "one 8-bit integer multiply-accumulate",
    "mult_int8": "one 8-bit integer multiply",
    "add_int8": "one 8-bit integer add",
    "add_int32": "one 32-bit integer add",
    "mult_int32": "one 32-bit integer multiply",
    # Memory access.
    "sram_read_32b": "one 32-bit read from a small (8 KB) on-chip SRAM",
    "dram_read_32b": "one 32-bit read from off-chip DRAM",
}

#: Capacity field names and their meaning. Values are counts (bits/bytes where named).
CAPACITY_FIELDS: dict[str, str] = {
    "cores_per_chip": "neuromorphic cores (or processing elements) per chip",
    "neurons_per_core": "maximum neurons (compartments) per core",
    "neurons_per_chip": "maximum neurons per chip",
    "synapses_per_core": "maximum synapses per core",
    "synapses_per_chip": "maximum synapses per chip",
    "synaptic_memory_bytes_per_core": "bytes of synaptic state per core",
    "memory_bytes_per_core": "total local memory per core (code, state and synapses), bytes",
    "sdram_bytes_per_chip": "off-die/external DRAM per chip, bytes",
    "input_axons_per_core": "maximum distinct input axons (fan-in sources) per core",
    "output_axons_per_core": "maximum core-to-core fan-out edges per core",
    "weight_bits": "maximum bits stored per synaptic weight",
    "graded_spike_payload_bits": "maximum graded-spike payload in bits (0 = binary spikes only)",
}

_ENTRY_FIELDS = ("value", "source", "year", "assumption", "verified", "basis", "note")
_DEVICE_FIELDS = ("name", "kind", "technology", "notes")
_TOP_LEVEL = ("schema_version", "device", "energy", "capacity")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Entry:
    """One sourced figure: ``value`` (joules per event for energy entries; a count, in bits or
    bytes where the name says so, for capacity entries) with its provenance."""

    value: float
    source: str
    year: int
    assumption: bool = False
    note: str = ""
    verified: bool = True
    basis: str | None = None


EnergyEntry = CapacityEntry = Entry  # the two tables share one entry type


@dataclass(frozen=True)
class Profile:
    """A loaded, validated hardware profile."""

    name: str
    kind: str
    energy: dict[str, EnergyEntry] = field(hash=False)
    capacity: dict[str, CapacityEntry] = field(hash=False)
    path: Path
    key: str = ""  # file stem: the name load_profile() accepts for a shipped profile
    technology: str = ""
    notes: str = ""

    def joules(self, event: str) -> float:
        """Joules per ``event``; ProfileError (listing what exists) when the device has none."""
        entry = self.energy.get(event)
        if entry is None:
            have = ", ".join(sorted(self.energy)) or "none"
            raise ProfileError(f"profile {self.path.name}: no energy entry {event!r} (has: {have})")
        return entry.value

    def assumptions(self) -> list[str]:
        """Names of energy/capacity entries whose value is an assumption, e.g. 'energy.mac'."""
        return [f"{t}.{k}" for t, d in (("energy", self.energy), ("capacity", self.capacity))
                for k, e in d.items() if e.assumption]

    def unverified(self) -> list[str]:
        """Names of energy/capacity entries marked ``verified = false``."""
        return [f"{t}.{k}" for t, d in (("energy", self.energy), ("capacity", self.capacity))
                for k, e in d.items() if not e.verified]


# ---------------------------------------------------------------------------------------------
# Locating shipped profiles


def profiles_dir():
    """Folder (a Path, or an importlib Traversable when installed) holding the shipped profiles.

    Installed: the subpackage ``bdh_spiking.hardware_profiles``. From a source checkout without
    that subpackage: the repository's top-level ``hardware_profiles/`` folder.
    """
    try:
        root = resources.files("bdh_spiking.hardware_profiles")
        if any(_is_toml(p) for p in root.iterdir()):
            return root
    except (ImportError, TypeError, ValueError, AttributeError, OSError):
        pass
    return Path(__file__).resolve().parents[1] / "hardware_profiles"


def _is_toml(p) -> bool:
    try:
        return p.name.endswith(".toml") and p.is_file()
    except OSError:
        return False


def _shipped() -> dict:
    root = profiles_dir()
    try:
        entries = list(root.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return {}
    return {p.name[: -len(".toml")]: p for p in entries if _is_toml(p)}


def list_profiles() -> list[str]:
    """Names of the shipped profiles, sorted (each usable with :func:`load_profile`)."""
    return sorted(_shipped())


def load_all() -> dict[str, Profile]:
    """Every shipped profile, loaded and validated, keyed by name."""
    return {name: load_profile(name) for name in list_profiles()}


def _looks_like_path(x) -> bool:
    if isinstance(x, os.PathLike):
        return True
    s = str(x)
    return s.endswith(".toml") or "/" in s or (os.sep in s) or bool(os.altsep and os.altsep in s)


def load_profile(name_or_path: Union[str, os.PathLike]) -> Profile:
    """Load a shipped profile by name (``"loihi"``) or any profile file by path.

    Raises ProfileError for an unknown name (listing the valid ones), a missing file, or a
    malformed profile (naming the file and the offending field).
    """
    if _looks_like_path(name_or_path):
        path = Path(name_or_path)
        if not path.is_file():
            raise ProfileError(f"profile file not found: {path}")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ProfileError(f"profile {path.name}: cannot read file: {e}") from None
        return _parse(data, label=path.name, path=path, key=path.stem)

    name = str(name_or_path).strip().lower()
    shipped = _shipped()
    if name not in shipped:
        valid = ", ".join(sorted(shipped)) or f"none found in {profiles_dir()}"
        raise ProfileError(
            f"unknown hardware profile {str(name_or_path)!r}; valid names: {valid} "
            "(or give the path of a .toml profile)"
        )
    res = shipped[name]
    return _parse(res.read_bytes(), label=res.name, path=Path(str(res)), key=name)


# ---------------------------------------------------------------------------------------------
# Parsing and validation


def _one_line(s: str) -> str:
    return re.sub(r"\s*[\r\n]+\s*", " ", str(s))


def _parse(data: bytes, *, label: str, path: Path, key: str) -> Profile:
    def fail(msg: str):
        raise ProfileError(_one_line(f"profile {label}: {msg}"))

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        fail("not UTF-8 text (expected a TOML file)")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        fail(f"not valid TOML: {e}")

    for k, v in doc.items():
        if k not in _TOP_LEVEL:
            what = f"table [{k}]" if isinstance(v, dict) else f"key {k!r}"
            fail(f"unknown top-level {what} (allowed: schema_version, [device], [energy], [capacity])")

    if "schema_version" in doc:
        sv = doc["schema_version"]
        if type(sv) is not int or sv != SCHEMA_VERSION:
            fail(f"schema_version must be {SCHEMA_VERSION}, got {sv!r}")

    device = doc.get("device")
    if device is None:
        fail("missing [device] table (with name and kind)")
    if not isinstance(device, dict):
        fail(f"device must be a table, got {device!r}")
    for k in device:
        if k not in _DEVICE_FIELDS:
            fail(f"device has unknown field {k!r} (allowed: {', '.join(_DEVICE_FIELDS)})")
    dev_name = device.get("name")
    if not isinstance(dev_name, str) or not dev_name.strip():
        fail(f"device.name is required (non-empty text), got {dev_name!r}")
    kind = device.get("kind")
    if kind not in KINDS:
        fail(f"device.kind must be one of {', '.join(KINDS)}, got {kind!r}")
    for k in ("technology", "notes"):
        if k in device and not isinstance(device[k], str):
            fail(f"device.{k} must be text, got {device[k]!r}")

    energy_tbl = doc.get("energy")
    if energy_tbl is None:
        fail("missing [energy] table")
    if not isinstance(energy_tbl, dict) or not energy_tbl:
        fail("[energy] must be a table with at least one entry")
    energy = {
        n: _entry(fail, "energy", n, e, ENERGY_EVENTS, EnergyEntry) for n, e in energy_tbl.items()
    }

    cap_tbl = doc.get("capacity", {})
    if not isinstance(cap_tbl, dict):
        fail(f"capacity must be a table, got {cap_tbl!r}")
    capacity = {
        n: _entry(fail, "capacity", n, e, CAPACITY_FIELDS, CapacityEntry)
        for n, e in cap_tbl.items()
    }

    return Profile(
        name=dev_name.strip(),
        kind=kind,
        energy=energy,
        capacity=capacity,
        path=path,
        key=key,
        technology=device.get("technology", ""),
        notes=device.get("notes", ""),
    )


def _entry(fail, table: str, name: str, e: Any, vocabulary: dict[str, str], cls):
    where = f"{table}.{name}"
    if not _NAME_RE.match(name):
        fail(f"{where}: entry names must be lower_snake_case")
    if name not in vocabulary and not name.startswith(EXTENSION_PREFIX):
        close = difflib.get_close_matches(name, list(vocabulary), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        fail(
            f"unknown {table} entry {name!r} ({hint}known: {', '.join(sorted(vocabulary))}; "
            f"prefix private entries with {EXTENSION_PREFIX!r})"
        )
    if not isinstance(e, dict):
        fail(f"{where} must be a table like {{ value = ..., source = \"...\", year = ... }}, got {e!r}")
    for k in e:
        if k not in _ENTRY_FIELDS:
            fail(f"{where} has unknown field {k!r} (allowed: {', '.join(_ENTRY_FIELDS)})")

    if "value" not in e:
        fail(f"{where}.value is required")
    value = e["value"]
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        fail(f"{where}.value must be a non-negative number, got {value!r}")

    source = e.get("source")
    if "source" not in e:
        fail(f"{where}.source is required (a citation for the number)")
    if not isinstance(source, str) or not source.strip():
        fail(f"{where}.source must be non-empty text, got {source!r}")

    if "year" not in e:
        fail(f"{where}.year is required (the year of the source)")
    year = e["year"]
    if type(year) is not int or not 1900 <= year <= 2100:
        fail(f"{where}.year must be an integer year between 1900 and 2100, got {year!r}")

    flags = {}
    for k, default in (("assumption", False), ("verified", True)):
        v = e.get(k, default)
        if not isinstance(v, bool):
            fail(f"{where}.{k} must be true or false, got {v!r}")
        flags[k] = v

    basis = e.get("basis")
    if basis is not None and basis not in BASES:
        fail(f"{where}.basis must be one of {', '.join(BASES)}, got {basis!r}")
    if basis == "assumed" and not flags["assumption"]:
        fail(f"{where}.basis is 'assumed' but assumption is not true")
    if flags["assumption"] and basis not in (None, "assumed"):
        fail(f"{where}.assumption is true but basis is {basis!r} (use 'assumed' or leave it out)")

    note = e.get("note", "")
    if not isinstance(note, str):
        fail(f"{where}.note must be text, got {note!r}")
    if (flags["assumption"] or not flags["verified"]) and not note.strip():
        which = "assumption = true" if flags["assumption"] else "verified = false"
        fail(f"{where}.note is required when {which} (say where the number comes from and why)")

    return cls(
        value=float(value) if table == "energy" else value,  # capacities keep their integer counts
        source=source.strip(),
        year=year,
        assumption=flags["assumption"],
        note=note.strip(),
        verified=flags["verified"],
        basis=basis,
    )
