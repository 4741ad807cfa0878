"""The dense trainer behind ``bdh-train``: byte-level next-token prediction, resumable.

Validation follows the official split (last 10% of the corpus). The reported validation loss
is the mean next-byte cross-entropy over all non-overlapping windows of the block size.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from .progress import bar as tqdm

from . import __version__
from .checkpoint import load_checkpoint, save_checkpoint
from .device import resolve_device
from .errors import ConfigError, TextError
from .model import BDH, BDHConfig
from .text import read_bytes, split, to_ids


@dataclasses.dataclass
class TrainSettings:
    text: str
    out: str
    steps: int = 3000
    batch_size: int = 16
    block_size: int = 256
    lr: float = 1e-3
    min_lr_fraction: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 250
    eval_windows: int = 32
    save_every: int = 250
    seed: int = 1337
    device: str = "auto"
    time_limit_s: float | None = None
    resume: bool = False
    threads: int | None = None


def learning_rate(step: int, s: TrainSettings) -> float:
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    progress = min(1.0, (step - s.warmup_steps) / max(1, s.steps - s.warmup_steps))
    floor = s.lr * s.min_lr_fraction
    return floor + 0.5 * (s.lr - floor) * (1 + math.cos(math.pi * progress))


def sample_batch(data: np.ndarray, s: TrainSettings, gen: torch.Generator, device) -> tuple:
    starts = torch.randint(len(data) - s.block_size - 1, (s.batch_size,), generator=gen)
    rows = np.stack([data[i : i + s.block_size + 1] for i in starts.tolist()]).astype(np.int64)
    batch = torch.from_numpy(rows).to(device)
    return batch[:, :-1], batch[:, 1:]


@torch.no_grad()
def validation_loss(model: BDH, data: np.ndarray, block_size: int, max_windows: int | None = None,
                    batch_size: int = 16, device=None, progress: bool = False) -> float:
    """Mean next-byte cross-entropy (nats/byte) over non-overlapping windows of ``block_size``."""
    device = device or next(model.parameters()).device
    count = (len(data) - 1) // block_size
    if max_windows is not None:
        count = min(count, max_windows)
    if count < 1:
        raise TextError(f"validation text of {len(data)} bytes is shorter than one block of {block_size}")
    ids = to_ids(data[: count * block_size + 1])
    inputs = ids[:-1].view(count, block_size)
    targets = ids[1:].view(count, block_size)
    was_training = model.training
    model.eval()
    total = 0.0
    for i in tqdm(range(0, count, batch_size), desc="validation", disable=not progress, leave=False):
        _, loss = model(inputs[i : i + batch_size].to(device), targets[i : i + batch_size].to(device))
        total += float(loss) * len(inputs[i : i + batch_size])
    model.train(was_training)
    return total / count


def check_text(data: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    train_part, val_part = split(data)
    need = block_size + 2
    if len(train_part) < need or len(val_part) < need:
        raise TextError(
            f"training text has {len(data)} bytes: too short for block size {block_size} "
            f"(the 90/10 split needs at least {need} bytes in each part, about {10 * need} in total)"
        )
    return train_part, val_part


def start_or_resume(s: TrainSettings, config: BDHConfig | None, gen: torch.Generator, log):
    """(model, checkpoint info or None, step, tokens, elapsed s, history): a new model, or with
    --resume the one in s.out with its trainer state (``gen`` is set to the saved state)."""
    out = Path(s.out)
    if not (s.resume and out.exists()):
        config = (config or BDHConfig()).validate()
        torch.manual_seed(s.seed)
        return BDH(config), None, 0, 0, 0.0, []
    model, info = load_checkpoint(out, log=log)
    trainer = info.get("trainer") or {}
    if not trainer or info.get("optimizer") is None:
        raise ConfigError(f"{out} holds no training state (optimizer/trainer): cannot resume from it")
    step, tokens, elapsed = int(trainer["step"]), int(trainer["tokens"]), float(trainer["elapsed_s"])
    history = list(info["meta"].get("history", []))
    gen.set_state(trainer["generator"])
    model.train()
    log(f"resuming {out} at step {step} ({tokens} tokens seen)")
    return model, info, step, tokens, elapsed, history


def check_settings(s: TrainSettings) -> None:
    """The settings' types and ranges, before any work (one ConfigError, as from the CLI)."""
    if s.block_size < 2 or s.batch_size < 1 or s.steps < 1:
        raise ConfigError("block size must be >= 2, batch size and steps >= 1")
    for name, low in (("eval_every", 1), ("eval_windows", 1), ("save_every", 1), ("warmup_steps", 0)):
        value = getattr(s, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    checks = [("lr", s.lr, False), ("weight_decay", s.weight_decay, True), ("grad_clip", s.grad_clip, False),
              ("min_lr_fraction", s.min_lr_fraction, True)]
    if s.time_limit_s is not None:
        checks.append(("time_limit_s", s.time_limit_s, False))
    for name, value, zero_ok in checks:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and \
            (value >= 0 if zero_ok else value > 0)
        if not ok:
            raise ConfigError(f"{name} must be a finite number {'>=' if zero_ok else '>'} 0, got {value!r}")


def train(settings: TrainSettings, config: BDHConfig | None = None, log: Callable[[str], None] = print,
          progress: bool = True) -> dict:
    """Trains (or resumes) and writes settings.out atomically; returns the final metadata."""
    s = settings
    if s.threads:
        torch.set_num_threads(s.threads)
    check_settings(s)
    device = resolve_device(s.device)
    data = read_bytes(s.text, what="training text")
    train_part, val_part = check_text(data, s.block_size)

    out = Path(s.out)
    gen = torch.Generator().manual_seed(s.seed)
    model, info, step, tokens, elapsed, history = start_or_resume(s, config, gen, log)
    model.to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    if s.resume and step:
        optimizer.load_state_dict(info["optimizer"])

    def meta(final_val: float | None = None) -> dict:
        return {
            "history": history,
            "settings": {k: v for k, v in dataclasses.asdict(s).items() if k not in ("out",)},
            "text_bytes": int(len(data)),
            "steps": step,
            "tokens": tokens,
            "train_time_s": round(elapsed, 1),
            "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
            "host": platform.node(),
            "torch": str(torch.__version__),  # TorchVersion (a str subclass) is refused by weights_only loads
            "bdh_spiking": __version__,
            "val_loss": final_val,
            "val_definition": "mean next-byte cross-entropy (nats/byte) over non-overlapping windows "
                              "of the block size on the last 10% of the text",
        }

    def checkpoint(final_val: float | None = None):
        trainer = {"step": step, "tokens": tokens, "elapsed_s": elapsed, "generator": gen.get_state()}
        save_checkpoint(out, model, meta(final_val), optimizer.state_dict(), trainer)

    log(f"training {sum(p.numel() for p in model.parameters()):,} parameters on {device} "
        f"({len(train_part):,} train / {len(val_part):,} validation bytes)")
    bar = tqdm(total=s.steps, initial=step, desc="train", unit="step", disable=not progress,
               dynamic_ncols=True)
    started = time.perf_counter() - elapsed
    ema = None
    try:
        while step < s.steps:
            if s.time_limit_s is not None and time.perf_counter() - started > s.time_limit_s:
                log(f"time limit of {s.time_limit_s:.0f} s reached at step {step}")
                break
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, s)
            x, y = sample_batch(train_part, s, gen, device)
            _, loss = model(x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if s.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
            optimizer.step()
            step += 1
            tokens += x.numel()
            elapsed = time.perf_counter() - started
            value = loss.item()  # float(loss) on a graph tensor warns on every step (torch >= 2.x)
            ema = value if ema is None else 0.95 * ema + 0.05 * value
            bar.update(1)
            bar.set_postfix(loss=f"{ema:.3f}", tok_s=f"{tokens / max(elapsed, 1e-9):,.0f}")
            if step % s.eval_every == 0 or step == s.steps:
                val = validation_loss(model, val_part, s.block_size, s.eval_windows, device=device)
                history.append({"step": step, "tokens": tokens, "train_loss_ema": round(ema, 4),
                                "val_loss_sample": round(val, 4), "time_s": round(elapsed, 1)})
                bar.write(f"step {step}: train {ema:.4f}  val (first {s.eval_windows} windows) {val:.4f}")
            if step % s.save_every == 0:
                checkpoint()
    except KeyboardInterrupt:
        bar.close()
        checkpoint()
        log(f"interrupted: saved a resumable checkpoint at step {step} to {out}")
        raise
    bar.close()
    final = validation_loss(model, val_part, s.block_size, device=device, progress=progress)
    checkpoint(final)
    log(f"done: {step} steps, {tokens:,} tokens, {elapsed:.0f} s; validation loss {final:.4f} nats/byte")
    return meta(final)
