"""The dense trainer behind ``bdh-train``: byte-level next-token prediction, resumable.

Validation follows the official split (last 10% of the corpus). The reported validation loss
is the mean next-byte cross-entropy over all non-overlapping windows of the block size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
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
    init: str | None = None  # start from this checkpoint's weights (a new run; --resume keeps its meaning)
    spiking_aware: int | None = None  # T: train through the converted network's activations at T steps
    max_spikes: int = 4  # K of spiking-aware training (1: rate coding)
    consistency: float = 0.0  # spiking-aware: weight of KL(plain forward || quantized forward) in the loss
    constraints: str | None = None  # a ladder rung: train through its dense form (semantics/constraints.py)
    bio_params: dict | None = None  # --constraints: the biophysical parameters the rung's neuron uses


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
        torch.manual_seed(s.seed)
        if s.init:
            model, _ = load_checkpoint(s.init, log=log)
            log(f"starting from the weights of {s.init} (config {model.config.to_dict()})")
            return model.train(), None, 0, 0, 0.0, []
        config = (config or BDHConfig()).validate()
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
    aware = spiking_aware_start(s, model, info, train_part, step, log)
    constrained = constraint_start(s, model, info, train_part, val_part, step, log, device)
    aware = aware or constrained  # the one activation replacement of this run (never both)

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
            **({"spiking_aware": {**aware.meta(), "consistency": s.consistency}, "init": s.init}
               if aware and not constrained else {"init": s.init} if s.init else {}),
            **({"constraints": constrained.meta()} if constrained else {}),
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
            _, loss = aware.loss(model, x, y, s.consistency) if aware else model(x, y)
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
                if aware:  # never after the last step: the saved thresholds are those it trained with
                    aware.evaluate_and_recalibrate(model, val_part, s, history[-1], bar.write, step < s.steps)
            if step % s.save_every == 0:
                checkpoint()
    except KeyboardInterrupt:
        bar.close()
        checkpoint()
        log(f"interrupted: saved a resumable checkpoint at step {step} to {out}")
        raise
    bar.close()
    final = validation_loss(model, val_part, s.block_size, device=device, progress=progress)
    if constrained:
        constrained.measure("after", model, val_part, s.block_size, device, log)
    checkpoint(final)
    log(f"done: {step} steps, {tokens:,} tokens, {elapsed:.0f} s; validation loss {final:.4f} nats/byte")
    return meta(final)


class SpikingAware:
    """The quantized activation of a spiking-aware run (``spiking_aware``) and its bookkeeping."""

    def __init__(self, quantizer, calibrated_at_step: int):
        self.quantizer = quantizer
        self.calibrated_at_step = calibrated_at_step

    def replaced(self, model):
        from .semantics.activation import replaced

        return replaced(model, self.quantizer)

    def loss(self, model, x, y, consistency: float = 0.0):
        """(logits, loss) of the quantized forward; with consistency w > 0 the loss adds
        w * KL(plain forward (no gradient, no dropout) || quantized forward) per byte, pulling the
        converted network towards the plain model it is measured against."""
        with self.replaced(model):
            logits, loss = model(x, y)
        if consistency > 0:  # the teacher is the plain forward without dropout (the model measured against)
            was_training = model.training
            model.eval()
            with torch.no_grad():
                target = F.log_softmax(model(x)[0], -1)
            model.train(was_training)
            logq = F.log_softmax(logits, -1)
            kl = (target.exp() * (target - logq)).sum(-1).mean()
            loss = loss + consistency * kl
        return logits, loss

    def meta(self) -> dict:
        from .spiking_aware import to_meta

        return to_meta(self.quantizer, self.calibrated_at_step)

    def evaluate_and_recalibrate(self, model, val_part, s: TrainSettings, row: dict, write,
                                 recalibrate: bool = True) -> None:
        """Records the quantized forward's validation estimate beside the plain one, then
        recalibrates the thresholds on the training split (they follow the weights)."""
        from .spiking_aware import calibrate

        with self.replaced(model):
            qval = validation_loss(model, val_part, s.block_size, s.eval_windows)
        row["val_loss_quantized_sample"] = round(qval, 4)
        write(f"  quantized forward (T={self.quantizer.timesteps}, K={self.quantizer.max_spikes}): val {qval:.4f}")
        if not recalibrate:
            return
        self.quantizer = calibrate(model, self.train_part, self.quantizer.timesteps, self.quantizer.max_spikes)
        self.calibrated_at_step = row["step"]


class ConstraintRun(SpikingAware):
    """A constraint fine-tuning run (``constraints``): the rung's activation (semantics/constraints.py)
    in place of the quantizer, recalibrated like it; records the validation loss of the plain and
    the constrained forward on the first MEASURE_WINDOWS validation windows before and after training."""

    def __init__(self, activation, calibrated_at_step: int, params: dict, measured: dict | None = None):
        from .semantics.constraints import rung_forms

        super().__init__(activation, calibrated_at_step)
        self.params, self.measured = params, dict(measured or {})
        self.forms = rung_forms(activation.neuron.rung, params)  # None up to onoff: the activation only

    @contextlib.contextmanager
    def replaced(self, model):
        """The rung's activation and (from local-plasticity on) its dense forms, together."""
        from .semantics.bio_forms import replaced_forms

        with super().replaced(model), replaced_forms(model, self.forms):
            yield model

    def meta(self) -> dict:
        from .constraint_training import to_meta

        return {**to_meta(self.quantizer, self.params, self.calibrated_at_step), "val_loss": self.measured}

    MEASURE_WINDOWS = 64  # the validation windows of the before/after measure (first 64: 16 KiB at 256)

    def measure(self, when: str, model, val_part, block_size: int, device, log) -> None:
        n = self.MEASURE_WINDOWS
        plain = validation_loss(model, val_part, block_size, n, device=device)
        with self.replaced(model):
            constrained = validation_loss(model, val_part, block_size, n, device=device)
        self.measured[when] = {"plain": round(plain, 5), "constrained": round(constrained, 5), "windows": n}
        log(f"constraint {self.quantizer.neuron.rung} ({when}): validation loss plain {plain:.4f}, "
            f"under the constraint {constrained:.4f} nats/byte (first {n} windows)")

    def evaluate_and_recalibrate(self, model, val_part, s: TrainSettings, row: dict, write,
                                 recalibrate: bool = True) -> None:
        from .constraint_training import calibrate

        with self.replaced(model):
            cval = validation_loss(model, val_part, s.block_size, s.eval_windows)
        row["val_loss_constrained_sample"] = round(cval, 4)
        write(f"  constrained forward ({self.quantizer.neuron.rung}): val {cval:.4f}")
        if recalibrate:
            self.quantizer = calibrate(model, self.train_part, self.quantizer.neuron, self.forms)
            self.calibrated_at_step = row["step"]


def constraint_start(s: TrainSettings, model, info, train_part, val_part, step: int, log, device):
    """None unless ``s.constraints``; else the ConstraintRun: the thresholds a resumed run recorded,
    or new ones calibrated on the training split (then both validation losses before training)."""
    if not s.constraints:
        return None
    if s.spiking_aware:
        raise ConfigError("--constraints and --spiking-aware each replace the activation: choose one")
    from .constraint_training import calibrate, from_meta
    from .semantics.constraints import RungNeuron, rung_forms

    recorded = ((info or {}).get("meta") or {}).get("constraints")
    if recorded and recorded.get("rung") == s.constraints:
        run = ConstraintRun(from_meta(recorded), int(recorded.get("calibrated_at_step", step)),
                            recorded["biophysical"], recorded.get("val_loss"))
        log(f"constraint {s.constraints}: the thresholds recorded at step {run.calibrated_at_step}")
    else:
        neuron = RungNeuron.from_params(s.constraints, s.bio_params, model.config.n_layer)
        forms = rung_forms(s.constraints, s.bio_params)
        run = ConstraintRun(calibrate(model, train_part, neuron, forms), step, dict(s.bio_params))
        log(f"constraint {s.constraints}: thresholds calibrated on the training split (mse, one spike per step); "
            f"windows {neuron.windows['x_eff']:.1f} / {neuron.windows['y_eff']:.1f} ms (x / y, effective)")
        run.measure("before", model, val_part, s.block_size, device, log)
    run.train_part = train_part
    return run


def spiking_aware_start(s: TrainSettings, model, info, train_part, step: int, log):
    """None for plain training; else the SpikingAware state: the thresholds a resumed run recorded,
    or new ones calibrated on the training split."""
    if not s.spiking_aware:
        return None
    from .spiking_aware import calibrate, from_meta

    recorded = ((info or {}).get("meta") or {}).get("spiking_aware")
    if recorded and int(recorded["timesteps"]) == s.spiking_aware and int(recorded["max_spikes"]) == s.max_spikes:
        aware = SpikingAware(from_meta(recorded), int(recorded.get("calibrated_at_step", step)))
        log(f"spiking-aware: T={s.spiking_aware}, K={s.max_spikes}, the thresholds recorded at step "
            f"{aware.calibrated_at_step}")
    else:
        aware = SpikingAware(calibrate(model, train_part, s.spiking_aware, s.max_spikes), step)
        log(f"spiking-aware: T={s.spiking_aware}, K={s.max_spikes}, thresholds calibrated on the training split")
    aware.train_part = train_part
    return aware


@dataclasses.dataclass
class RecallTrainSettings:
    """Training on the associative-recall task (bdh_spiking.tasks.recall): loss on the answer bytes, plus
    the previous-key hint (recall_answer_loss); RECALL_MODEL_CARD.md gives the reasons."""

    out: str
    steps: int = 1000
    batch_size: int = 32
    lr: float = 6e-3
    min_lr_fraction: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    max_pairs: int = 8  # K drawn uniformly in 1..max_pairs per step
    max_gap: int = 32  # G drawn uniformly in 0..max_gap per step
    curriculum_steps: int = 300  # the largest K and G grow linearly from 2 and 0 to their maxima over these steps
    repeat_queries: bool = True  # training episodes query keys with replacement (no answer by elimination)
    freeze_fraction: float = 0.3  # this share of the episodes stops writing S after the study phase
    prev_key_weight: float = 1.0  # auxiliary loss: the previous byte (the key) decoded at study value positions
    eval_every: int = 250
    seed: int = 1337
    device: str = "auto"
    time_limit_s: float | None = None
    threads: int | None = None


def recall_answer_loss(model: BDH, batch, device, frozen: torch.Tensor | None = None,
                       prev_key_head: torch.nn.Module | None = None,
                       prev_key_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean cross-entropy at the answer bytes, accuracy there) of one RecallBatch: the logits at
    position p - 1 predict the answer byte at p; every other byte is context only.

    frozen (n,) bool, optional: those episodes write S during the study phase only (the dense
    form of the study's frozen_after_study). prev_key_head, optional: a linear read-out of the
    residual entering layer 1 at the study value positions, trained to name the byte before (the
    key); its cross-entropy times prev_key_weight is added to the answer loss (a training hint;
    the head is not saved)."""
    ids = torch.from_numpy(batch.ids.astype(np.int64)).to(device)
    writes = None
    if frozen is not None:
        study = (torch.arange(ids.shape[1], device=device) < batch.study_end).float()
        writes = torch.where(frozen.to(device)[:, None], study[None, :], torch.ones_like(study)[None, :])
    seen = {}

    def probe(layer, x, x_current, y_current):
        if layer == 1:
            seen["x"] = x

    logits, _ = model(ids, writes=writes, probe=probe if prev_key_head is not None else None)
    pos = torch.as_tensor(batch.answers - 1, device=device)
    pred = logits[:, pos]
    target = ids[:, pos + 1]
    loss = torch.nn.functional.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1))
    if prev_key_head is not None and "x" in seen:
        vpos = torch.arange(1, batch.study_end, 2, device=device)
        hint = prev_key_head(seen["x"][:, 0, vpos])
        loss = loss + prev_key_weight * torch.nn.functional.cross_entropy(hint.reshape(-1, hint.shape[-1]),
                                                                          ids[:, vpos - 1].reshape(-1))
    return loss, (pred.argmax(-1) == target).float().mean()


@torch.no_grad()
def recall_validation(model: BDH, seed: int, device, n: int = 64) -> dict:
    """Dense answer accuracy on fresh episodes (a fixed seed) over K in {4, 8, 16} x G in {0, 16, 64}."""
    from .tasks.recall import make_batch

    was = model.training
    model.eval()
    acc = {f"K{K}_G{G}": float(recall_answer_loss(model, make_batch(seed + 7919 * K + G, K, G, n), device)[1])
           for K in (4, 8, 16) for G in (0, 16, 64)}
    model.train(was)
    return acc


def recall_curriculum(step: int, s: RecallTrainSettings) -> tuple[int, int]:
    """(largest K, largest G) drawn at this step: from (2, 0) to (max_pairs, max_gap) linearly."""
    frac = 1.0 if s.curriculum_steps <= 0 else min(1.0, step / s.curriculum_steps)
    return (min(s.max_pairs, 2 + round(frac * (s.max_pairs - 2))), round(frac * s.max_gap))


def train_recall(s: RecallTrainSettings, config: BDHConfig, log: Callable[[str], None] = print,
                 progress: bool = True) -> dict:
    """Trains a fresh BDH on associative recall (reproducible from s.seed); writes s.out atomically."""
    from .tasks.recall import make_batch

    if s.threads:
        torch.set_num_threads(s.threads)
    device = resolve_device(s.device)
    torch.manual_seed(s.seed)
    model = BDH(config.validate()).to(device)
    model.train()
    head = torch.nn.Linear(config.n_embd, config.vocab_size).to(device) if s.prev_key_weight > 0 else None
    params = list(model.parameters()) + (list(head.parameters()) if head is not None else [])
    optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    rng = np.random.default_rng(s.seed)
    lr_rule = TrainSettings(text="", out=s.out, steps=s.steps, lr=s.lr, min_lr_fraction=s.min_lr_fraction,
                            warmup_steps=s.warmup_steps)
    history, ema, started, step = [], None, time.perf_counter(), 0
    log(f"training {sum(p.numel() for p in model.parameters()):,} parameters on {device} (associative recall, "
        f"K in 1..{s.max_pairs}, G in 0..{s.max_gap}, loss on answer bytes"
        + (f" + {s.prev_key_weight:g} x previous-key hint" if s.prev_key_weight > 0 else "")
        + (f", {s.freeze_fraction:.0%} frozen after study" if s.freeze_fraction > 0 else "")
        + (", queries with replacement" if s.repeat_queries else "") + ")")
    for step in tqdm(range(1, s.steps + 1), desc="train", disable=not progress, dynamic_ncols=True):
        if s.time_limit_s is not None and time.perf_counter() - started > s.time_limit_s:
            log(f"time limit of {s.time_limit_s:.0f} s reached at step {step - 1}")
            step -= 1
            break
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step - 1, lr_rule)
        k_max, g_max = recall_curriculum(step, s)
        batch = make_batch(rng, int(rng.integers(1, k_max + 1)), int(rng.integers(0, g_max + 1)), s.batch_size,
                           repeat_queries=s.repeat_queries)
        frozen = torch.from_numpy(rng.random(s.batch_size) < s.freeze_fraction) if s.freeze_fraction > 0 else None
        loss, _ = recall_answer_loss(model, batch, device, frozen, head, s.prev_key_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if s.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        optimizer.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if step % s.eval_every == 0 or step == s.steps:
            acc = recall_validation(model, s.seed, device)
            history.append({"step": step, "train_loss_ema": round(ema, 4), "val_accuracy": acc,
                            "time_s": round(time.perf_counter() - started, 1)})
            log(f"step {step}: answer loss {ema:.4f}  dense accuracy (min over grid) {min(acc.values()):.3f}")
    elapsed = time.perf_counter() - started
    final = recall_validation(model, s.seed, device, n=256)
    meta = {"task": "recall", "history": history, "settings": {k: v for k, v in dataclasses.asdict(s).items()
                                                               if k != "out"},
            "steps": step, "train_time_s": round(elapsed, 1), "device": str(device), "host": platform.node(),
            "torch": str(torch.__version__), "bdh_spiking": __version__, "val_accuracy": final,
            "val_definition": "dense next-byte accuracy at the answer bytes of 256 fresh episodes per (K, G), "
                              "K in {4,8,16}, G in {0,16,64} (seed-derived, disjoint from training draws)"}
    save_checkpoint(Path(s.out), model, meta)
    log(f"done: {step} steps, {elapsed:.0f} s; dense answer accuracy {final}")
    return meta
