"""Loading and saving dense BDH checkpoints: this project's own format and the official one.

Own format (written by bdh-train): a dict loadable with ``torch.load(weights_only=True)``::

    {"format": "bdh-spiking-checkpoint", "version": 1, "config": {...}, "model": state_dict,
     "meta": {...training metadata...}, "optimizer": ..., "trainer": ...}   # last two optional

Official format (github.com/pathwaycom/bdh): a bare state dict, keys ``encoder``, ``encoder_v``,
``decoder``, ``lm_head``, ``embed.weight``, ``attn.freqs``, possibly prefixed ``_orig_mod.`` by
torch.compile, and in the first release an unused ``lm_gate``. The layer count is stored in no
tensor, so it comes from the caller (official default 6) and the loader says what it assumed.
"""

from __future__ import annotations

import contextlib
import hashlib
import pickle
import zipfile
from importlib import resources
from pathlib import Path
from typing import Callable

import torch

from .errors import CheckpointError, ConfigError
from .fileio import atomic_path
from .model import BDH, BDHConfig

FORMAT = "bdh-spiking-checkpoint"
VERSION = 1
OFFICIAL_N_LAYER = 6
COMPILE_PREFIX = "_orig_mod."
PARAM_KEYS = ("encoder", "encoder_v", "decoder", "lm_head", "embed.weight", "attn.freqs")
IGNORED_KEYS = ("lm_gate",)  # first official release: defined, never used in forward

Log = Callable[[str], None]


def default_model_path() -> Path:
    return Path(str(resources.files("bdh_spiking") / "data" / "default_model.pt"))


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


MAX_PICKLE_BYTES = 64 << 20  # the pickled structure of a checkpoint (not its tensors) is a few kB


def _check_zip(path: Path) -> None:
    """A zip checkpoint's members, before torch reads any: not a network file, stored (not
    compressed: torch writes none, and a compressed member could expand without bound), the
    pickled structure of a plausible size."""
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
    names = [i.filename for i in infos]
    if "manifest.json" in names:
        raise CheckpointError(f"{path} is a converted spiking network (.bdhsnn), not a dense checkpoint: "
                              "pass it with --load (Python: SpikingNetwork.load)")
    if not any(n.endswith("data.pkl") for n in names):
        raise CheckpointError(f"not a PyTorch checkpoint: {path} is a zip without data.pkl")
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(f"refused {path}: member {info.filename!r} is compressed (PyTorch writes "
                                  "none; a compressed member could expand without bound)")
        if info.filename.endswith("data.pkl") and info.file_size > MAX_PICKLE_BYTES:
            raise CheckpointError(f"refused {path}: its pickled structure declares {info.file_size:,} bytes, over "
                                  f"the cap of {MAX_PICKLE_BYTES:,}")


def _tensors(obj, where: str = ""):
    """(path, tensor) of every tensor in a loaded checkpoint (dicts, lists and tuples walked)."""
    if isinstance(obj, torch.Tensor):
        yield where, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{where}.{k}" if where else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{where}[{i}]")


def check_storages(raw, path: Path, file_bytes: int) -> None:
    """Every tensor addresses only bytes its storage holds (no stride-0 or overlapping view that
    claims more elements than were stored), and the storages together fit in the file. Checked
    on the memory-mapped load, before any tensor is materialised or computed on."""
    storages = {}
    for where, t in _tensors(raw):
        storage = t.untyped_storage().nbytes()
        item = t.element_size()
        extent = (t.storage_offset() + sum((n - 1) * st for n, st in zip(t.shape, t.stride())) + 1) \
            if t.numel() else 0
        if any(st < 0 for st in t.stride()) or extent * item > storage or t.numel() * item > storage:
            raise CheckpointError(f"refused {path}: tensor '{where}' of shape {tuple(t.shape)} claims "
                                  f"{t.numel() * item:,} bytes from a storage of {storage:,} (a stride trick)")
        storages[t.untyped_storage().data_ptr()] = storage
    total = sum(storages.values())
    if total > file_bytes:
        raise CheckpointError(f"refused {path}: its tensors claim {total:,} bytes, the file holds {file_bytes:,}")


def read_raw(path: str | Path) -> object:
    """torch.load with weights_only=True, every failure turned into a one-line CheckpointError.
    Zip checkpoints are checked member by member, loaded memory-mapped, and every tensor checked
    against its storage before anything is materialised; the legacy non-zip format is refused."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"checkpoint path is a directory: {path}")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not head:
        raise CheckpointError(f"checkpoint file is empty: {path}")
    if head[:1] == b"\x80":
        raise CheckpointError(f"{path} is in PyTorch's legacy (pre-1.6, non-zip) format, whose storage sizes cannot "
                              "be checked before they are allocated: re-save it with torch.save where you trust it")
    if not head.startswith(b"PK"):
        raise CheckpointError(f"not a PyTorch checkpoint (unrecognised file header): {path}")
    try:
        _check_zip(path)
        # torch.__version__ (a TorchVersion, a plain str subclass) sits in the metadata of
        # checkpoints written before train.py stored it as str; allow just that class.
        safe = getattr(torch.serialization, "safe_globals", None)
        with safe([torch.torch_version.TorchVersion]) if safe else contextlib.nullcontext():
            raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc).lower() or "weights only" in str(exc).lower():
            raise CheckpointError(
                f"refused to load {path}: it contains Python objects that a weights-only load does "
                "not allow (a pickle that could execute code)"
            ) from None
        raise CheckpointError(f"corrupt checkpoint {path}: {str(exc).splitlines()[0]}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"corrupt or truncated checkpoint {path}: {first}") from None
    check_storages(raw, path, path.stat().st_size)
    return raw


def _strip_prefix(state: dict) -> dict:
    return {(k[len(COMPILE_PREFIX):] if k.startswith(COMPILE_PREFIX) else k): v for k, v in state.items()}


def infer_config(state: dict, n_layer: int, dropout: float = 0.1) -> BDHConfig:
    """Config from tensor shapes; every shape checked against the others."""
    def shape(key):
        return tuple(state[key].shape)

    enc = shape("encoder")
    if len(enc) != 3:
        raise CheckpointError(f"tensor 'encoder' must be 3-d (heads, dim, neurons), got shape {enc}")
    nh, D, N = enc
    V = shape("embed.weight")[0] if len(shape("embed.weight")) == 2 else -1
    expected = {
        "encoder_v": (nh, D, N),
        "decoder": (nh * N, D),
        "embed.weight": (V, D),
        "lm_head": (D, V),
        "attn.freqs": (1, 1, 1, N),
    }
    for key, want in expected.items():
        if shape(key) != want:
            raise CheckpointError(
                f"inconsistent shapes: tensor '{key}' has shape {shape(key)}, expected {want} "
                f"(from 'encoder' {enc} and 'embed.weight' {shape('embed.weight')})"
            )
    if (N * nh) % D:
        raise CheckpointError(f"neurons per head {N} x heads {nh} is not a multiple of dim {D}")
    config = BDHConfig(n_layer=n_layer, n_embd=D, dropout=dropout, n_head=nh,
                       mlp_internal_dim_multiplier=N * nh // D, vocab_size=V)
    try:
        return config.validate()
    except ConfigError as exc:
        raise CheckpointError(f"impossible config in checkpoint: {exc}") from None


def check_keys(state: dict, log: Log) -> dict:
    state = _strip_prefix(state)
    for key in IGNORED_KEYS:
        if key in state:
            log(f"note: ignored tensor '{key}' (present in the first official release, unused by the model)")
            state = {k: v for k, v in state.items() if k != key}
    missing = [k for k in PARAM_KEYS if k not in state]
    unexpected = sorted(k for k in state if k not in PARAM_KEYS)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(repr(k) for k in missing))
        if unexpected:
            parts.append("unexpected " + ", ".join(repr(k) for k in unexpected))
        raise CheckpointError("state dict keys do not match a BDH model: " + "; ".join(parts))
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"entry '{key}' is not a tensor ({type(value).__name__})")
        if not value.is_floating_point():
            raise CheckpointError(f"tensor '{key}' is not floating point ({value.dtype})")
        if not torch.isfinite(value).all():
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(f"tensor '{key}' contains {bad} NaN/Inf values")
    return state


def build_model(state: dict, config: BDHConfig) -> BDH:
    model = BDH(config)
    params_dtype = state["encoder"].dtype
    model.to(params_dtype)
    model.load_state_dict({k: v.to(params_dtype) if k != "attn.freqs" else v for k, v in state.items()})
    # the official frequencies are float32; keep the stored values even if params are not
    model.attn.freqs = state["attn.freqs"].to(torch.float32).clone()
    model.eval()
    return model


def load_checkpoint(path: str | Path | None = None, n_layer: int | None = None, log: Log | None = None):
    """Returns (model, info). info: format, path, sha256, config, meta, and raw training state."""
    log = log or (lambda msg: None)
    path = Path(path) if path is not None else default_model_path()
    if n_layer is not None and (not isinstance(n_layer, int) or n_layer < 1):
        raise CheckpointError(f"n_layer must be a positive integer, got {n_layer!r}")
    raw = read_raw(path)
    if not isinstance(raw, dict):
        raise CheckpointError(f"not a BDH checkpoint: {path} holds a {type(raw).__name__}, not a dict")
    info = {"path": str(path), "sha256": file_sha256(path)}
    if raw.get("format") == FORMAT:
        if raw.get("version") != VERSION:
            raise CheckpointError(f"checkpoint format version {raw.get('version')} is not supported "
                                  f"(this bdh-spiking reads version {VERSION})")
        if not isinstance(raw.get("model"), dict) or not isinstance(raw.get("config"), dict):
            raise CheckpointError(f"checkpoint {path} lacks its 'model' or 'config' entry")
        state = check_keys(raw["model"], log)
        stored = dict(raw["config"])
        layers, dropout = stored.get("n_layer", OFFICIAL_N_LAYER), stored.get("dropout", 0.1)
        if not isinstance(layers, int) or isinstance(layers, bool) or not 1 <= layers <= 4096:
            raise CheckpointError(f"checkpoint {path}: config n_layer must be an integer in [1, 4096], got {layers!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise CheckpointError(f"checkpoint {path}: config dropout must be a number in [0, 1), got {dropout!r}")
        inferred = infer_config(state, layers, dropout)
        for key in ("n_embd", "n_head", "mlp_internal_dim_multiplier", "vocab_size"):
            if stored.get(key) != getattr(inferred, key):
                raise CheckpointError(f"config field {key}={stored.get(key)} disagrees with the tensor "
                                      f"shapes ({getattr(inferred, key)})")
        config = inferred
        if n_layer is not None and n_layer != config.n_layer:
            log(f"note: running with n_layer={n_layer} instead of the checkpoint's {config.n_layer}")
            config.n_layer = n_layer
        info.update(format=FORMAT, meta=raw.get("meta", {}), optimizer=raw.get("optimizer"),
                    trainer=raw.get("trainer"))
    else:
        state = check_keys(raw, log)
        layers = n_layer if n_layer is not None else OFFICIAL_N_LAYER
        config = infer_config(state, layers)
        how = "given" if n_layer is not None else "assumed, the official default; pass --n-layer to change"
        log(f"official checkpoint: n_layer={layers} ({how}); the layer count is stored in no tensor")
        info.update(format="official", meta={}, optimizer=None, trainer=None)
    info["config"] = config.to_dict()
    model = build_model(state, config)
    model.provenance = {"checkpoint": str(path), "checkpoint_sha256": info["sha256"],
                        "checkpoint_format": info["format"]}
    # a spiking-aware checkpoint (bdh-train --spiking-aware) records T, K and its thresholds
    model.spiking_aware = (info.get("meta") or {}).get("spiking_aware")
    # a constraint checkpoint (bdh-train --constraints RUNG) records its rung, neuron and thresholds
    model.constraints = (info.get("meta") or {}).get("constraints")
    return model, info


def load_model(path: str | Path | None = None, n_layer: int | None = None, log: Log | None = None) -> BDH:
    """Public entry point: a BDH module (eval mode) whose ``model(ids)`` returns (logits, loss).

    path=None loads the shipped default model; n_layer=None takes it from the checkpoint
    (official checkpoints, which do not store it, get the official default of 6).
    """
    return load_checkpoint(path, n_layer, log)[0]


def _plain(value):
    """Metadata as plain Python types (str subclasses such as torch's TorchVersion are not
    allowed by a weights-only load)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def save_checkpoint(path: str | Path, model: BDH, meta: dict | None = None,
                    optimizer: dict | None = None, trainer: dict | None = None) -> None:
    """Atomic write of the own format; loads with torch.load(weights_only=True)."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.config.to_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": _plain(meta or {}),
    }
    if optimizer is not None:
        payload["optimizer"] = optimizer
    if trainer is not None:
        payload["trainer"] = trainer
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
