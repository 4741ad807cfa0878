"""``bdh-train``: the real entry point run as a subprocess (success, --strip, a missing file, a corrupt
checkpoint), the other one-line errors in-process (no interpreter start-up per case)."""

from __future__ import annotations

import pytest
import torch

from bdh_spiking.checkpoint import load_checkpoint

from conftest import corpus_text

TINY_FLAGS = ["--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--mult", "2", "--steps", "5",
              "--block-size", "32", "--batch-size", "4", "--eval-every", "5", "--save-every", "5",
              "--device", "cpu", "--threads", "1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, run_cli):
    """One real training run shared by the tests of this module."""
    root = tmp_path_factory.mktemp("cli")
    corpus = root / "corpus.txt"
    corpus.write_text(corpus_text(6000))
    out = root / "model.pt"
    rc, stdout, stderr = run_cli("bdh-train", "--text", corpus, "--out", out, *TINY_FLAGS, cwd=root)
    return root, corpus, out, rc, stdout, stderr


def assert_one_line_error(rc: int, stderr: str, *phrases: str) -> None:
    assert rc != 0
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error:"), stderr
    for phrase in phrases:
        assert phrase in lines[0], stderr


def test_training_run_succeeds(trained):
    root, corpus, out, rc, stdout, stderr = trained
    assert rc == 0, stderr
    assert "Traceback" not in stderr
    assert "Warning" not in stderr, stderr
    assert out.is_file()
    raw = torch.load(out, weights_only=True)
    assert raw["config"]["n_layer"] == 1 and raw["config"]["n_embd"] == 32
    assert raw["config"]["mlp_internal_dim_multiplier"] == 2
    assert raw["meta"]["steps"] == 5 and raw["trainer"]["step"] == 5
    assert raw["meta"]["val_loss"] > 0
    assert "done: 5 steps" in stderr
    assert "optimizer" in raw
    # no temporary files left beside the checkpoint
    assert sorted(p.name for p in root.iterdir()) == ["corpus.txt", "model.pt"]


def test_strip_writes_smaller_file_without_optimizer(trained, run_cli, tmp_path):
    _, _, out, rc, _, stderr = trained
    assert rc == 0, stderr
    stripped = tmp_path / "stripped.pt"
    rc, _, stderr = run_cli("bdh-train", "--strip", out, "--out", stripped, cwd=tmp_path)
    assert rc == 0, stderr
    assert "Traceback" not in stderr
    assert stripped.stat().st_size < out.stat().st_size
    raw = torch.load(stripped, weights_only=True)
    assert "optimizer" not in raw and "trainer" not in raw
    original = torch.load(out, weights_only=True)
    assert raw["meta"] == original["meta"]
    assert set(raw["model"]) == set(original["model"])
    for key, value in original["model"].items():
        assert torch.equal(raw["model"][key], value), key
    model, info = load_checkpoint(stripped)
    assert info["optimizer"] is None and info["config"]["n_layer"] == 1


def test_missing_text_file(run_cli, tmp_path):
    out = tmp_path / "model.pt"
    rc, _, stderr = run_cli("bdh-train", "--text", tmp_path / "absent.txt", "--out", out, *TINY_FLAGS,
                            cwd=tmp_path)
    assert_one_line_error(rc, stderr, "not found", "absent.txt")
    assert not out.exists()


def test_empty_text_file(run_main, tmp_path):
    corpus = tmp_path / "empty.txt"
    corpus.write_bytes(b"")
    out = tmp_path / "model.pt"
    rc, _, stderr = run_main("bdh-train", "--text", corpus, "--out", out, *TINY_FLAGS, cwd=tmp_path)
    assert_one_line_error(rc, stderr, "empty")
    assert not out.exists()


def test_text_shorter_than_a_block(run_main, tmp_path):
    corpus = tmp_path / "short.txt"
    corpus.write_text("Only a few bytes.")
    out = tmp_path / "model.pt"
    rc, _, stderr = run_main("bdh-train", "--text", corpus, "--out", out, *TINY_FLAGS, cwd=tmp_path)
    assert_one_line_error(rc, stderr, "too short", "block size 32")
    assert not out.exists()


def test_impossible_config(run_main, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(corpus_text(2000))
    out = tmp_path / "model.pt"
    flags = list(TINY_FLAGS)
    flags[flags.index("--n-embd") + 1] = "30"
    flags[flags.index("--n-head") + 1] = "4"
    rc, _, stderr = run_main("bdh-train", "--text", corpus, "--out", out, *flags, cwd=tmp_path)
    assert_one_line_error(rc, stderr, "30", "4", "divisible")
    assert not out.exists()


def test_strip_of_corrupt_checkpoint(run_cli, tmp_path):
    # (every kind of corrupt file is covered in-process by test_checkpoint.py; here the CLI path)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 a zip header, then garbage")
    out = tmp_path / "stripped.pt"
    rc, _, stderr = run_cli("bdh-train", "--strip", bad, "--out", out, cwd=tmp_path)
    assert_one_line_error(rc, stderr, "bad.pt", "corrupt")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pt"]


def test_strip_of_truncated_checkpoint(trained, run_main, tmp_path):
    _, _, out, rc, _, stderr = trained
    assert rc == 0, stderr
    bad = tmp_path / "cut.pt"
    data = out.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    stripped = tmp_path / "stripped.pt"
    rc, _, stderr = run_main("bdh-train", "--strip", bad, "--out", stripped, cwd=tmp_path)
    assert_one_line_error(rc, stderr, "truncated")
    assert not stripped.exists()
