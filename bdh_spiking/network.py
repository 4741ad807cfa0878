"""The spiking network IR: populations, projections, the plastic Hebbian rule, file format.

A ``SpikingNetwork`` is backend-neutral: every simulator lowers the same object, and the
meaning of each field is defined in docs/spiking-semantics.md. It carries the dense weights it
came from (unfolded, float64), the calibrated thresholds (in activation units, independent of
the number of timesteps), the RoPE frequencies, and its provenance, so it needs no checkpoint.

File format (``.bdhsnn``): a zip holding ``manifest.json`` (format name and version, config,
the structure below, provenance) and one ``.npy`` per array. Written atomically.
"""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from pathlib import Path

import numpy as np

from .errors import NetworkFormatError
from .fileio import atomic_path

FORMAT = "bdh-spiking-network"
FORMAT_VERSION = 1
GATINGS = ("gain", "product")
QUANT_FORMAT = "bdh-spiking-fixed-point"
QUANT_FORMAT_VERSION = 1

# Arrays every network holds, with their shapes in terms of the config (L layers, H heads,
# D residual units, N neurons per head, V vocabulary).
ARRAY_SHAPES = {
    "embed": ("V", "D"),
    "encoder": ("H", "D", "N"),
    "encoder_v": ("H", "D", "N"),
    "decoder": ("HN", "D"),
    "lm_head": ("D", "V"),
    "freqs": ("N",),
    "theta_x": ("L", "H", "N"),
    "theta_y": ("L", "H", "N"),
}


@dataclasses.dataclass(frozen=True)
class Dims:
    """L layers, H heads, D residual units, N neurons per head, V vocabulary."""

    L: int
    H: int
    D: int
    N: int
    V: int

    @property
    def HN(self) -> int:
        return self.H * self.N

    def as_dict(self) -> dict:
        return {"L": self.L, "H": self.H, "D": self.D, "N": self.N, "V": self.V, "HN": self.HN}

    @classmethod
    def of_config(cls, c: dict) -> "Dims":
        return cls(L=c["n_layer"], H=c["n_head"], D=c["n_embd"], N=c["n_neurons"], V=c["vocab_size"])


@dataclasses.dataclass(frozen=True)
class FixedPointFormat:
    """Integer widths of mode 'fixed-point' (docs/spiking-semantics.md, "Fixed-point mode").

    weight_bits: signed weight mantissas; state_bits: membranes and currents; the unit threshold
    is 2**threshold_exp state units; payload_bits, frac_bits: graded values (value = int / 2**frac);
    plastic_bits: the plastic-synapse accumulator; granularity: one weight exponent of E and E_v
    per postsynaptic neuron ('neuron') or per layer ('projection'); clip_quantile: the quantile of
    |W| each exponent is chosen from.
    """

    weight_bits: int = 8
    state_bits: int = 24
    payload_bits: int = 24
    threshold_exp: int = 16
    frac_bits: int = 16
    plastic_bits: int = 32
    granularity: str = "neuron"
    clip_quantile: float = 1.0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# the integer tables of a quantization, with their shapes
QUANT_TABLES = {
    "q_W_x": ("L", "H", "D", "N"), "q_W_y": ("L", "H", "D", "N"), "q_W_x_shift": ("L", "H", "N"),
    "q_W_y_shift": ("L", "H", "N"), "q_theta_x": ("L", "H", "N"), "q_theta_y": ("L", "H", "N"),
    "q_embed": ("V", "D"), "q_decoder": ("HN", "D"), "q_lm_head": ("D", "V"),
}


@dataclasses.dataclass
class Quantization:
    """The integer formats and tables of a network for mode 'fixed-point' (made by
    ``semantics.quantize.quantize``). ``tables`` holds the integer arrays (``QUANT_TABLES``);
    ``source_arrays_sha`` the digest of the float arrays they were made from."""

    format: FixedPointFormat
    v0: int  # v_init in state units
    exponents: dict  # per-projection weight exponents of embed, decoder, lm_head
    lm_shift: int
    logit_scale_exp: int
    summary: dict
    weights_zeroed: int
    weights_saturated: int
    source_arrays_sha: str
    tables: dict
    format_version: int = QUANT_FORMAT_VERSION

    @property
    def threshold(self) -> int:
        return 1 << self.format.threshold_exp

    def int_tables(self) -> dict:
        return {name: np.asarray(a).astype(np.int64) for name, a in self.tables.items()}

    def meta(self) -> dict:
        """The manifest entry (the file format of version 1: ``extra['quantization']``)."""
        return {"format": QUANT_FORMAT, "format_version": self.format_version, "params": self.format.as_dict(),
                "threshold": self.threshold, "v0": self.v0, "exponents": self.exponents, "lm_shift": self.lm_shift,
                "logit_scale_exp": self.logit_scale_exp, "summary": self.summary,
                "weights_zeroed": self.weights_zeroed, "weights_saturated": self.weights_saturated,
                "arrays": {n: {"shape": list(a.shape), "dtype": str(a.dtype)} for n, a in self.tables.items()},
                "source_arrays_sha": self.source_arrays_sha}

    @classmethod
    def from_meta(cls, meta: dict, tables: dict) -> "Quantization":
        if meta.get("format") != QUANT_FORMAT:
            raise NetworkFormatError(f"unknown quantization format {meta.get('format')!r}")
        version = meta.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= QUANT_FORMAT_VERSION:
            raise NetworkFormatError(f"quantization format version {version!r} is not one this bdh-spiking reads "
                                     f"(1..{QUANT_FORMAT_VERSION})")
        missing = set(QUANT_TABLES) - set(tables)
        if missing:
            raise NetworkFormatError(f"quantized network lacks integer tables {sorted(missing)}")
        _check_quant_params(meta.get("params"))
        try:
            return cls(format=FixedPointFormat(**meta["params"]), v0=int(meta["v0"]), exponents=dict(meta["exponents"]),
                       lm_shift=int(meta["lm_shift"]), logit_scale_exp=int(meta["logit_scale_exp"]),
                       summary=dict(meta.get("summary", {})), weights_zeroed=int(meta.get("weights_zeroed", 0)),
                       weights_saturated=int(meta.get("weights_saturated", 0)),
                       source_arrays_sha=str(meta["source_arrays_sha"]), tables=dict(tables), format_version=version)
        except (KeyError, TypeError, ValueError) as exc:
            raise NetworkFormatError(f"incomplete quantization entry in the manifest: {exc}") from None


def _check_quant_params(params) -> None:
    """The integer widths of a stored quantization: known names, integers in [0, 64] (the
    granularity a name, the clip quantile a number in (0, 1])."""
    fields = {f.name for f in dataclasses.fields(FixedPointFormat)}
    if not isinstance(params, dict) or set(params) - fields:
        raise NetworkFormatError(f"quantization params must map names among {sorted(fields)} to values")
    for key, value in params.items():
        if key == "granularity":
            ok = value in ("neuron", "projection")
        elif key == "clip_quantile":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1
        else:
            ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 64
        if not ok:
            raise NetworkFormatError(f"quantization param {key!r} has an invalid value {value!r}")


@dataclasses.dataclass(frozen=True)
class Population:
    """A group of neurons of one kind; ``threshold`` names the array of per-neuron thresholds."""

    name: str
    size: str  # in config symbols, per layer: "H*N" or "D"
    model: str  # "IF" (integrate-and-fire, reset by subtraction) or "graded" (non-spiking value)
    role: str
    threshold: str | None = None


@dataclasses.dataclass(frozen=True)
class Projection:
    name: str
    pre: str
    post: str
    weight: str | None  # array name; None for the plastic projection (state starts at zero)
    kind: str  # "static" or "plastic"
    note: str = ""


@dataclasses.dataclass(frozen=True)
class PlasticRule:
    """Hebbian synapses x neurons -> residual units, one D x N matrix per layer and head.

    Fixed-frame oscillator form: x neuron pair (2k, 2k+1) carries the phase (t * freqs[2k]) % 1
    at token t; its decoded activity a is sent as the rotated payload q = R_t a. Readout before
    the write: u = S q; then S += x ⊗ q (x = the layer's residual input). S = 0 at sequence start.
    """

    name: str = "hebbian_rope"
    pre: str = "x"
    post: str = "residual"
    form: str = "fixed_frame_oscillator"
    phases: str = "freqs"
    init: str = "zero_each_sequence"
    order: str = "read_then_write"


POPULATIONS = (
    Population("residual", "D", "graded", "residual stream after LayerNorm (layer input)"),
    Population("x", "H*N", "IF", "a = ReLU(x E): sparse positive x neurons", "theta_x"),
    Population("attn", "H*D", "graded", "u = S q read from the plastic synapses, then LayerNorm"),
    Population("y", "H*N", "IF", "product gating: b = ReLU(LN(u) E_v); gain gating: g = a * b", "theta_y"),
    Population("readout", "V", "graded", "logits = x_L lm_head"),
)

PROJECTIONS = (
    Projection("embedding", "input", "residual", "embed", "static", "one row per byte, then LayerNorm"),
    Projection("E", "residual", "x", "encoder", "static", "graded input, folded by theta_x"),
    Projection("hebbian", "x", "attn", None, "plastic", "see PlasticRule"),
    Projection("E_v", "attn", "y", "encoder_v", "static", "graded input, folded by theta_y"),
    Projection("D", "y", "residual", "decoder", "static", "gated activity -> residual, then LayerNorm"),
    Projection("lm_head", "residual", "readout", "lm_head", "static", ""),
)


@dataclasses.dataclass
class SpikingNetwork:
    """The converted network. Arrays are float64 numpy (freqs: float32).

    ``v_init`` (the IF neurons' membrane at every token start, in threshold units) is assignable;
    ``validate()`` (run on construction, ``save`` and ``load``, and by ``simulate``) refuses what
    the semantics does not define. ``quantization`` is set by ``semantics.quantize.quantize``.
    """

    config: dict
    arrays: dict
    gating: str = "product"
    v_init: float = 0.5  # initial membrane potential of IF neurons, in units of the threshold
    calibration: dict = dataclasses.field(default_factory=dict)
    provenance: dict = dataclasses.field(default_factory=dict)
    plastic: PlasticRule = dataclasses.field(default_factory=PlasticRule)
    populations: tuple = POPULATIONS
    projections: tuple = PROJECTIONS
    extra: dict = dataclasses.field(default_factory=dict)  # free-form notes of later passes
    quantization: Quantization | None = None

    def __post_init__(self):
        self.validate()

    # -- shape bookkeeping --------------------------------------------------------------
    @property
    def dims(self) -> Dims:
        return Dims.of_config(self.config)

    def expected_shape(self, name: str) -> tuple:
        d = self.dims.as_dict()
        return tuple(d[s] for s in (ARRAY_SHAPES.get(name) or QUANT_TABLES[name]))

    def validate(self) -> "SpikingNetwork":
        """Refuses anything the semantics does not define (NetworkFormatError, one line)."""
        if self.gating not in GATINGS:
            raise NetworkFormatError(f"unknown gating {self.gating!r}: use one of {', '.join(GATINGS)}")
        v = self.v_init
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not 0.0 <= float(v) < 1.0:
            raise NetworkFormatError(f"v_init must be a number in [0, 1) (the membrane at each token start, in "
                                     f"threshold units), got {v!r}")
        if not isinstance(self.config, dict):
            raise NetworkFormatError("network config must be a mapping")
        for key in ("n_layer", "n_embd", "n_head", "n_neurons", "vocab_size"):
            value = self.config.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise NetworkFormatError(f"network config field {key!r} missing or not a positive integer")
        for name in ARRAY_SHAPES:
            if name not in self.arrays:
                raise NetworkFormatError(f"network lacks array {name!r}")
            self._check_shape(name, self.arrays[name])
            if not np.all(np.isfinite(self.arrays[name])):
                raise NetworkFormatError(f"array {name!r} contains NaN/Inf")
        for name in ("theta_x", "theta_y"):
            if np.any(self.arrays[name] <= 0):
                raise NetworkFormatError(f"array {name!r} has non-positive thresholds")
        if self.quantization is not None:
            for name, table in self.quantization.tables.items():
                self._check_shape(name, table)
        return self

    def _check_shape(self, name: str, array) -> None:
        shape, want = tuple(np.shape(array)), self.expected_shape(name)
        if shape != want:
            raise NetworkFormatError(f"array {name!r} has shape {shape}, expected {want}")

    # -- hardware metadata ----------------------------------------------------------------
    def hardware_summary(self) -> dict:
        """Neuron and synapse counts, fan-in/out, weight ranges and state sizes per layer."""
        d = self.dims
        L, H, D, N, V = d.L, d.H, d.D, d.N, d.V

        def wrange(name):
            a = self.arrays[name]
            return [float(a.min()), float(a.max())]

        return {
            "layers": L,
            "weights_shared_across_layers": True,
            "populations": {
                "x": {"neurons_per_layer": H * N, "model": "IF", "fan_in": D, "fan_out": D + 1},
                "y": {"neurons_per_layer": H * N, "model": "IF", "fan_in": D + (1 if self.gating == "gain" else 0),
                      "fan_out": D if self.gating == "gain" else 1},
                "residual": {"units_per_layer": D, "model": "graded"},
                "attn": {"units_per_layer": H * D, "model": "graded (LayerNorm per head)"},
                "readout": {"units": V, "model": "graded"},
            },
            "static_synapses_per_layer": {"E": H * D * N, "E_v": H * D * N, "D": H * N * D},
            "static_synapses_total": {"embedding": V * D, "lm_head": D * V},
            "plastic_synapses_per_layer": H * D * N,
            "plastic_state_values_total": L * H * D * N,
            "weight_ranges": {k: wrange(k) for k in ("embed", "encoder", "encoder_v", "decoder", "lm_head")},
            "threshold_ranges": {k: wrange(k) for k in ("theta_x", "theta_y")},
        }

    # -- file format ----------------------------------------------------------------------
    def manifest(self) -> dict:
        from . import __version__

        extra = dict(self.extra)
        arrays = dict(self.arrays)
        if self.quantization is not None:
            extra["quantization"] = self.quantization.meta()
            arrays.update(self.quantization.tables)
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "bdh_spiking_version": __version__,
            "config": self.config,
            "gating": self.gating,
            "v_init": self.v_init,
            "plastic": dataclasses.asdict(self.plastic),
            "populations": [dataclasses.asdict(p) for p in self.populations],
            "projections": [dataclasses.asdict(p) for p in self.projections],
            "calibration": self.calibration,
            "provenance": self.provenance,
            "extra": extra,
            "hardware": self.hardware_summary(),
            "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()},
        }

    def all_arrays(self) -> dict:
        """The float arrays and, when quantized, the integer tables: what a file holds."""
        return {**self.arrays, **(self.quantization.tables if self.quantization is not None else {})}

    def save(self, path: str | Path) -> None:
        self.validate()
        manifest = self.manifest()
        with atomic_path(path) as tmp:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
                zf.writestr("manifest.json", json.dumps(manifest, indent=1, sort_keys=True))
                for name, array in sorted(self.all_arrays().items()):
                    buf = io.BytesIO()
                    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
                    zf.writestr(f"arrays/{name}.npy", buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> "SpikingNetwork":
        path = Path(path)
        manifest, arrays = _read_file(path)
        extra = dict(manifest.get("extra") or {})
        quant_meta = extra.pop("quantization", None)
        tables = {name: arrays.pop(name) for name in list(arrays) if name in QUANT_TABLES}
        try:
            quant = Quantization.from_meta(quant_meta, tables) if quant_meta is not None else None
            v_init = manifest["v_init"]
            return cls(
                config=manifest["config"], arrays=arrays, gating=manifest["gating"],
                v_init=float(v_init) if isinstance(v_init, (int, float)) and not isinstance(v_init, bool) else v_init,
                calibration=manifest.get("calibration", {}),
                provenance=manifest.get("provenance", {}), plastic=PlasticRule(**manifest["plastic"]),
                extra=extra, quantization=quant,
            )
        except (KeyError, TypeError) as exc:
            raise NetworkFormatError(f"network file {path} has an incomplete manifest: missing {exc}") from None
        except NetworkFormatError as exc:
            raise NetworkFormatError(f"network file {path}: {exc}") from None


MAX_MANIFEST_BYTES = 16 << 20  # a manifest is a few kB; more is not a network file
MAX_DIM = 1 << 20  # no dimension of a network (layers, heads, units, neurons, vocabulary) is larger
MAX_ARRAY_ELEMENTS = 1 << 31  # 16 GB of float64 in one array: the cap on what a file may claim
NPY_HEADER_MAX = 1 << 16  # an .npy header of a plain array is under 200 bytes; room for version 2
FLOAT_KINDS, INT_KINDS = ("f",), ("i", "u")  # complex, bool, object and strings are refused
CONFIG_KEYS = ("n_layer", "n_embd", "n_head", "n_neurons", "vocab_size")


def _refuse(path, message: str):
    raise NetworkFormatError(f"network file {path}: {message}")


def _check_manifest(path, manifest) -> None:
    """The manifest's schema: types, ranges and names, before anything it names is read."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        fmt = manifest.get("format") if isinstance(manifest, dict) else None
        raise NetworkFormatError(f"{path} is not a bdh-spiking network (format {fmt!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise NetworkFormatError(f"{path} has an invalid format version {version!r} (expected an integer >= 1)")
    if version > FORMAT_VERSION:
        raise NetworkFormatError(f"{path} has network format version {version}, newer than this bdh-spiking reads "
                                 f"({FORMAT_VERSION}); upgrade bdh-spiking")
    config = manifest.get("config")
    if not isinstance(config, dict):
        _refuse(path, "manifest field 'config' missing or not a mapping")
    for key in CONFIG_KEYS:
        value = config.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_DIM:
            _refuse(path, f"config field {key!r} must be an integer in [1, {MAX_DIM}], got {value!r}")
    if manifest.get("gating") not in GATINGS:
        _refuse(path, f"gating must be one of {', '.join(GATINGS)}, got {manifest.get('gating')!r}")
    v = manifest.get("v_init")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
        _refuse(path, f"v_init must be a number in [0, 1), got {v!r}")
    plastic = manifest.get("plastic")
    fields = {f.name for f in dataclasses.fields(PlasticRule)}
    if not isinstance(plastic, dict) or set(plastic) - fields or not all(isinstance(x, str) for x in plastic.values()):
        _refuse(path, f"manifest field 'plastic' must map names among {sorted(fields)} to strings")
    for key in ("calibration", "provenance", "extra"):
        if not isinstance(manifest.get(key, {}), dict):
            _refuse(path, f"manifest field {key!r} must be a mapping")
    arrays = manifest.get("arrays")
    if not isinstance(arrays, dict):
        _refuse(path, "manifest field 'arrays' missing or not a mapping")
    for name, entry in arrays.items():
        if name not in ARRAY_SHAPES and name not in QUANT_TABLES:
            _refuse(path, f"unknown array name {name!r} (a network holds only {', '.join(ARRAY_SHAPES)} and the "
                          "q_* tables of a quantization)")
        if not isinstance(entry, dict) or not isinstance(entry.get("dtype"), str):
            _refuse(path, f"manifest entry of array {name!r} must give its dtype")


def _array_spec(path, name: str, entry: dict, dims: Dims) -> tuple[tuple, np.dtype]:
    """(shape, dtype) that array ``name`` must have: the shape from the dims, the dtype of the
    manifest if it is of the allowed kind."""
    d = dims.as_dict()
    shape = tuple(d[sym] for sym in (ARRAY_SHAPES.get(name) or QUANT_TABLES[name]))
    if int(np.prod(shape, dtype=object)) > MAX_ARRAY_ELEMENTS:
        _refuse(path, f"array {name!r} of shape {shape} exceeds the cap of {MAX_ARRAY_ELEMENTS:,} elements")
    if entry.get("shape") != list(shape):
        _refuse(path, f"manifest gives array {name!r} the shape {entry.get('shape')!r}, the config implies "
                      f"{list(shape)}")
    try:
        dtype = np.dtype(entry["dtype"])
    except TypeError:
        _refuse(path, f"array {name!r} has an unknown dtype {entry['dtype']!r}")
    kinds = INT_KINDS if name in QUANT_TABLES else FLOAT_KINDS
    if dtype.kind not in kinds or dtype.hasobject:
        want = "integer" if name in QUANT_TABLES else "floating point"
        _refuse(path, f"array {name!r} has dtype {dtype}, expected {want}")
    return shape, dtype


def _read_array(path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, shape: tuple, dtype) -> np.ndarray:
    """One array, its declared size and .npy header checked before its data is read."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if info.file_size > nbytes + NPY_HEADER_MAX:
        _refuse(path, f"array {name!r} is stored in {info.file_size:,} bytes, more than its shape {shape} and dtype "
                      f"{dtype} allow ({nbytes:,} bytes plus header)")
    with zf.open(info) as fh:
        major, _ = np.lib.format.read_magic(fh)
        if major not in (1, 2):
            _refuse(path, f"array {name!r} has an unsupported .npy version {major}")
        reader = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        stored_shape, fortran, stored_dtype = reader(fh)
        if tuple(stored_shape) != shape or stored_dtype != dtype:
            _refuse(path, f"array {name!r} has shape {tuple(stored_shape)} and dtype {stored_dtype}, expected "
                          f"{shape} and {dtype} (from the manifest's config)")
        data = fh.read(nbytes + 1)
    if len(data) != nbytes:
        _refuse(path, f"array {name!r} holds {len(data):,} data bytes, expected {nbytes:,}")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


def _read_file(path: Path) -> tuple[dict, dict]:
    """(manifest, arrays) of a .bdhsnn file. Nothing in it is trusted: the manifest's schema is
    checked, array names come from a fixed set, each array's dtype and shape are checked against
    the config's dims from its .npy header and its declared size before its data is read."""
    if not path.is_file():
        raise NetworkFormatError(f"network file not found: {path}" if not path.exists()
                                 else f"network path is a directory, expected a .bdhsnn file: {path}")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = {i.filename: i for i in zf.infolist()}
            if "manifest.json" not in infos:
                hint = (" (it looks like a PyTorch checkpoint: pass it as the checkpoint argument, not --load)"
                        if any(n.endswith("data.pkl") for n in infos) else "")
                raise NetworkFormatError(f"{path} is not a bdh-spiking network (no manifest.json){hint}")
            if infos["manifest.json"].file_size > MAX_MANIFEST_BYTES:
                _refuse(path, f"manifest.json declares {infos['manifest.json'].file_size:,} bytes, over the cap of "
                              f"{MAX_MANIFEST_BYTES:,}")
            manifest = json.loads(zf.read("manifest.json"))
            _check_manifest(path, manifest)
            dims = Dims.of_config(manifest["config"])
            arrays = {}
            for name, entry in manifest["arrays"].items():
                info = infos.get(f"arrays/{name}.npy")
                if info is None:
                    raise NetworkFormatError(f"{path} lacks array {name!r} listed in its manifest")
                shape, dtype = _array_spec(path, name, entry, dims)
                arrays[name] = _read_array(path, zf, info, name, shape, dtype)
    except (zipfile.BadZipFile, json.JSONDecodeError, ValueError, EOFError, OSError,
            UnicodeDecodeError, RecursionError) as exc:
        raise NetworkFormatError(f"corrupt or truncated network file {path}: {exc}") from None
    return manifest, arrays


def dense_model(net: SpikingNetwork):
    """The dense BDH the network came from, rebuilt from the weights it carries (float64)."""
    import torch

    from .model import BDH, BDHConfig

    c = net.config
    model = BDH(BDHConfig(n_layer=c["n_layer"], n_embd=c["n_embd"], n_head=c["n_head"], dropout=0.0,
                          mlp_internal_dim_multiplier=c["n_neurons"] * c["n_head"] // c["n_embd"],
                          vocab_size=c["vocab_size"])).to(torch.float64).eval()
    state = {
        "embed.weight": net.arrays["embed"], "encoder": net.arrays["encoder"],
        "encoder_v": net.arrays["encoder_v"], "decoder": net.arrays["decoder"], "lm_head": net.arrays["lm_head"],
    }
    with torch.no_grad():
        for key, value in state.items():
            model.get_parameter(key).copy_(torch.as_tensor(value))
    model.attn.freqs = torch.as_tensor(net.arrays["freqs"], dtype=torch.float32).view(1, 1, 1, -1).clone()
    model.provenance = {"checkpoint": net.provenance.get("checkpoint", "network file"),
                        "checkpoint_sha256": net.provenance.get("checkpoint_sha256")}
    return model
