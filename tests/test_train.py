"""The dense trainer: it learns, writes a complete checkpoint, resumes, and refuses bad text."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from bdh_spiking.checkpoint import load_checkpoint, save_checkpoint
from bdh_spiking.errors import ConfigError, TextError
from bdh_spiking.model import BDH, BDHConfig
from bdh_spiking.text import read_bytes
from bdh_spiking.train import TrainSettings, check_text, learning_rate, train, validation_loss

BLOCK = 32
BATCH = 8


def config() -> BDHConfig:
    return BDHConfig(n_layer=1, n_embd=32, n_head=2, mlp_internal_dim_multiplier=4)


def settings(text, out, **overrides) -> TrainSettings:
    values = dict(text=str(text), out=str(out), steps=30, batch_size=BATCH, block_size=BLOCK,
                  lr=3e-3, warmup_steps=5, eval_every=10, eval_windows=4, save_every=10,
                  device="cpu", threads=1, seed=1234)
    values.update(overrides)
    return TrainSettings(**values)


def run(s: TrainSettings, messages: list | None = None) -> dict:
    log = messages.append if messages is not None else (lambda msg: None)
    return train(s, config(), log=log, progress=False)


def test_training_reduces_validation_loss(make_corpus, tmp_path):
    corpus = make_corpus()
    s = settings(corpus, tmp_path / "model.pt")
    _, val_part = check_text(read_bytes(corpus), BLOCK)

    torch.manual_seed(s.seed)  # the trainer's own initialisation
    before = validation_loss(BDH(config()), val_part, BLOCK)
    assert before == pytest.approx(5.545, abs=0.1)  # ~ln(256) for an untrained byte model

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a training loop should not warn on every step
        meta = run(s)
    after = meta["val_loss"]
    assert after < before - 0.5, (before, after)

    # the checkpoint holds the same model: its validation loss is the reported one
    model, info = load_checkpoint(s.out)
    assert validation_loss(model, val_part, BLOCK) == pytest.approx(after, rel=1e-6)
    assert info["meta"]["val_loss"] == after


def test_checkpoint_contents(make_corpus, tmp_path):
    corpus = make_corpus()
    s = settings(corpus, tmp_path / "model.pt", steps=12, eval_every=4, save_every=6)
    meta = run(s)
    raw = torch.load(s.out, weights_only=True)
    assert raw["format"] == "bdh-spiking-checkpoint"
    assert raw["config"] == config().to_dict()
    m = raw["meta"]
    assert m["steps"] == 12 and m["tokens"] == 12 * BATCH * BLOCK
    assert isinstance(m["val_loss"], float) and m["val_loss"] == meta["val_loss"]
    assert [h["step"] for h in m["history"]] == [4, 8, 12]
    for h in m["history"]:
        assert set(h) >= {"step", "tokens", "train_loss_ema", "val_loss_sample", "time_s"}
    assert m["text_bytes"] == len(read_bytes(corpus))
    assert type(m["torch"]) is str  # not a TorchVersion, which weights-only loads refuse
    assert m["settings"]["block_size"] == BLOCK and "out" not in m["settings"]
    assert raw["trainer"]["step"] == 12
    assert raw["trainer"]["tokens"] == 12 * BATCH * BLOCK
    assert raw["optimizer"]["state"]
    # nothing but the checkpoint is left beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["corpus.txt", "model.pt"])


def test_resume_continues_to_total_steps(make_corpus, tmp_path):
    corpus = make_corpus()
    out = tmp_path / "model.pt"
    run(settings(corpus, out, steps=10, eval_every=5, save_every=5))
    first = torch.load(out, weights_only=True)
    assert first["trainer"]["step"] == 10
    assert [h["step"] for h in first["meta"]["history"]] == [5, 10]

    messages = []
    meta = run(settings(corpus, out, steps=20, eval_every=5, save_every=5, resume=True), messages)
    assert any("resuming" in m and "step 10" in m for m in messages)
    second = torch.load(out, weights_only=True)
    assert second["trainer"]["step"] == 20
    assert second["trainer"]["tokens"] == 20 * BATCH * BLOCK
    assert meta["steps"] == 20 and second["meta"]["steps"] == 20
    history = second["meta"]["history"]
    assert len(history) > len(first["meta"]["history"])
    assert [h["step"] for h in history] == [5, 10, 15, 20]
    assert history[:2] == first["meta"]["history"]
    # the weights moved on from the first run's
    assert not torch.equal(second["model"]["encoder"], first["model"]["encoder"])


def test_resume_of_finished_run_does_no_more_steps(make_corpus, tmp_path):
    corpus = make_corpus()
    out = tmp_path / "model.pt"
    run(settings(corpus, out, steps=6, eval_every=3, save_every=3))
    before = torch.load(out, weights_only=True)
    run(settings(corpus, out, steps=6, eval_every=3, save_every=3, resume=True))
    after = torch.load(out, weights_only=True)
    assert after["trainer"]["step"] == 6
    assert torch.equal(after["model"]["encoder"], before["model"]["encoder"])


def test_resume_needs_training_state(make_corpus, tmp_path, tiny_model):
    corpus = make_corpus()
    out = tmp_path / "stripped.pt"
    save_checkpoint(out, tiny_model, {"steps": 3})
    with pytest.raises(ConfigError, match="cannot resume"):
        run(settings(corpus, out, resume=True))


def test_text_shorter_than_a_block(make_corpus, tmp_path):
    corpus = make_corpus(text="too short")
    out = tmp_path / "model.pt"
    with pytest.raises(TextError, match="too short"):
        run(settings(corpus, out))
    assert not out.exists()


def test_text_too_short_for_the_validation_split(make_corpus, tmp_path):
    # enough for one training block, not for the 10% validation part
    corpus = make_corpus(text="x" * (3 * BLOCK))
    out = tmp_path / "model.pt"
    with pytest.raises(TextError, match="block size 32"):
        run(settings(corpus, out))
    assert not out.exists()


def test_empty_text(make_corpus, tmp_path):
    corpus = make_corpus(text=b"")
    out = tmp_path / "model.pt"
    with pytest.raises(TextError, match="empty"):
        run(settings(corpus, out))
    assert not out.exists()


def test_missing_text(tmp_path):
    out = tmp_path / "model.pt"
    with pytest.raises(TextError, match="not found"):
        run(settings(tmp_path / "absent.txt", out))
    assert not out.exists()


@pytest.mark.parametrize("field,value", [("block_size", 1), ("batch_size", 0), ("steps", 0)])
def test_bad_settings(make_corpus, tmp_path, field, value):
    corpus = make_corpus()
    with pytest.raises(ConfigError):
        run(settings(corpus, tmp_path / "model.pt", **{field: value}))


def test_validation_loss_needs_one_block():
    with pytest.raises(TextError):
        validation_loss(BDH(config()), np.zeros(BLOCK, dtype=np.uint8), BLOCK)


def test_learning_rate_schedule():
    s = TrainSettings(text="-", out="-", steps=100, lr=1e-3, warmup_steps=10, min_lr_fraction=0.1)
    assert learning_rate(0, s) == pytest.approx(1e-4)
    assert learning_rate(9, s) == pytest.approx(1e-3)
    assert learning_rate(10, s) == pytest.approx(1e-3)
    assert learning_rate(100, s) == pytest.approx(1e-4)
    lrs = [learning_rate(i, s) for i in range(10, 101)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
