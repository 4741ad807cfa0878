"""Shared fixtures for the Foundation tests: tiny models, a generated corpus, a CLI runner.

Everything here is deliberately tiny: the tests must stay fast on a 2-core machine that may be
busy with a training run, so torch is limited to one thread.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bdh_spiking.model import BDH, BDHConfig

torch.set_num_threads(1)
# Brian2's default target 'auto' compiles cython (~2 minutes cold); tests use numpy unless they
# ask for cython (the slow tests do). Subprocesses inherit it.
os.environ.setdefault("BDH_SPIKING_BRIAN2_TARGET", "numpy")
# ... and the runtime device for Brian2's rung psc unless a test asks for cpp_standalone (a compile)
os.environ.setdefault("BDH_SPIKING_BRIAN2_DEVICE", "runtime")

TINY = dict(n_layer=2, n_embd=32, n_head=2, mlp_internal_dim_multiplier=4, dropout=0.0)


def randomize(model: BDH, std: float = 0.3, seed: int = 0) -> BDH:
    """Redraws every parameter (not the RoPE buffer) with a larger std, so activations are
    far from the near-zero regime of the 0.02 initialisation."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype) * std)
    return model.eval()


def make_model(seed: int = 0, std: float = 0.3, **overrides) -> BDH:
    cfg = dict(TINY)
    cfg.update(overrides)
    return randomize(BDH(BDHConfig(**cfg)), std=std, seed=seed)


@pytest.fixture
def tiny_config() -> BDHConfig:
    return BDHConfig(**TINY)


@pytest.fixture
def tiny_model() -> BDH:
    return make_model()


@pytest.fixture
def model_factory():
    return make_model


_SUBJECTS = ["the old king", "a young dragon", "the small bird", "my good friend", "the quiet river",
             "a brave knight", "the tired farmer", "her clever sister"]
_VERBS = ["sees", "finds", "loves", "follows", "remembers", "carries", "watches", "hears"]
_OBJECTS = ["the golden crown", "a bright star", "the long road", "an open door", "the cold wind",
            "a sweet song", "the green hill", "his last letter"]
_TAILS = ["at dawn", "in the evening", "before the storm", "near the castle", "without a word",
          "every morning", "under the moon", "once again"]


def corpus_text(n_bytes: int = 6000, seed: int = 0) -> str:
    """Deterministic English-like sentences, about n_bytes long."""
    rng = random.Random(seed)
    parts, size = [], 0
    while size < n_bytes:
        s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}."
        s = s[0].upper() + s[1:] + ("\n" if rng.random() < 0.2 else " ")
        parts.append(s)
        size += len(s)
    return "".join(parts)


@pytest.fixture
def make_corpus(tmp_path):
    """make_corpus(name="corpus.txt", n_bytes=6000, text=None) -> Path of a file in tmp_path."""

    def build(name: str = "corpus.txt", n_bytes: int = 6000, text: str | bytes | None = None) -> Path:
        path = tmp_path / name
        if text is None:
            text = corpus_text(n_bytes)
        if isinstance(text, str):
            text = text.encode("utf-8")
        path.write_bytes(text)
        return path

    return build


def console_script(name: str) -> str:
    path = os.path.join(os.path.dirname(sys.executable), name)
    if not os.path.exists(path):
        pytest.skip(f"console script {name} is not installed beside {sys.executable}")
    return path


def run_script(name: str, *args, cwd=None, timeout: float = 180) -> tuple[int, str, str]:
    """Runs an installed console script; returns (returncode, stdout, stderr)."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([console_script(name), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="session")
def run_cli():
    return run_script


def run_in_process(main, argv) -> tuple[object, str, str]:
    """A CLI main run in this process: (exit code, stdout, stderr); an uncaught exception is
    printed as the traceback a user would see and returns "traceback". For the one-line-error
    tests: no interpreter start-up per case (the real entry points are run as subprocesses by
    the end-to-end tests)."""
    import contextlib
    import io
    import traceback

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            rc = main.run([str(a) for a in argv])
        except SystemExit as exc:
            rc = exc.code
        except BaseException:  # what a user would see as a traceback
            traceback.print_exc()
            rc = "traceback"
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="session")
def run_main():
    """run_main("bdh-convert", *args) -> (exit code, stdout, stderr), in this process."""
    from bdh_spiking.cli import convert_main, energy_main, study_main, train_main

    mains = {"bdh-train": train_main, "bdh-convert": convert_main, "bdh-energy": energy_main, "bdh-study": study_main}

    def run(name: str, *args, cwd=None):
        old = os.getcwd()
        try:
            if cwd is not None:
                os.chdir(cwd)
            return run_in_process(mains[name], args)
        finally:
            os.chdir(old)

    return run
