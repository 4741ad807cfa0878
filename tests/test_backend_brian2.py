"""The Brian2 backend against the reference executor (stepwise, the normative form).

Tiny random models; Brian2's numpy codegen target (no compilation), so the file runs in well
under two minutes on a busy 2-core machine. The cython target is exercised by a slow test.
"""

from __future__ import annotations

import math
import os
import time

import pytest
import torch

pytest.importorskip("brian2")

import bdh_spiking as bs  # noqa: E402
from bdh_spiking.backends import brian2 as brian2_backend, reference  # noqa: E402
from bdh_spiking.backends.base import EVENT_KEYS  # noqa: E402
from bdh_spiking.backends.registry import check_request  # noqa: E402
from bdh_spiking.errors import CheckpointError, ConfigError  # noqa: E402
from bdh_spiking.model import BDH, BDHConfig  # noqa: E402
from bdh_spiking.report import spike_differences  # noqa: E402
from bdh_spiking.semantics import GRADED_RTOL, Plasticity, SimSettings, run_population  # noqa: E402

from conftest import randomize  # noqa: E402

RECORD = ("counts", "margins", "decoded", "state")
pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated - use:DeprecationWarning")  # brian2's pyparsing use


def small_net(gating: str, n_layer: int, seed: int = 0):
    model = randomize(BDH(BDHConfig(n_layer=n_layer, n_embd=16, n_head=2, mlp_internal_dim_multiplier=4,
                                    dropout=0.0)), std=0.3, seed=seed)
    gen = torch.Generator().manual_seed(100 + seed)
    calibration = bytes(torch.randint(0, 256, (1024,), generator=gen).tolist())
    return bs.convert(model, gating=gating, calibration=calibration)


def token_ids(batch: int, length: int, seed: int = 0):
    return torch.randint(0, 256, (batch, length), generator=torch.Generator().manual_seed(seed))


def assert_matches_reference(net, ids, settings, plasticity=None, **options):
    ref = reference.simulate(net, ids, settings, record=RECORD, plasticity=plasticity, stepwise=True)
    out = brian2_backend.simulate(net, ids, settings, record=RECORD, plasticity=plasticity or Plasticity(),
                                  **options)
    assert out.backend == "brian2"
    assert out.logits.dtype == torch.float64 and out.logits.shape == ref.logits.shape
    diffs = spike_differences(ref, out)
    assert diffs["non_tie_differences"] == 0, diffs
    rel = float((out.logits - ref.logits).abs().max() / ref.logits.abs().max())
    assert rel <= 1e-9, rel
    for key in ("x_counts", "y_counts", "a_hat", "g_hat", "state"):
        assert out.records[key].dtype == torch.float64 and out.records[key].shape == ref.records[key].shape
    if diffs["differing_spikes_vs_reference"] == 0:  # no ties hit: everything downstream agrees too
        for key in ref.stats:
            assert torch.equal(out.stats[key], ref.stats[key]), key
        assert out.events == ref.events
        for key in ("a_hat", "g_hat"):  # decoded = counts * theta / T: as exact as the counts
            a, b = ref.records[key], out.records[key]
            if settings.coding == "graded":  # float payloads: the contract's GRADED_RTOL (Brian2
                # sums synaptic inputs in synapse order, torch in its matmul order)
                assert bool(((a - b).abs() <= GRADED_RTOL * a.abs().clamp(min=1.0)).all()), key
            else:
                assert torch.equal(a, b), key
        torch.testing.assert_close(out.records["state"], ref.records["state"], rtol=1e-9, atol=1e-12)
        for pop in ("x", "y"):  # the margins Brian2 tracks are the reference's (up to rounding)
            a, b = ref.records[f"{pop}_margins"], out.records[f"{pop}_margins"]
            assert torch.equal(torch.isinf(a), torch.isinf(b))
            assert float((a - b)[torch.isfinite(a)].abs().max()) <= 1e-9
    assert float(ref.stats["x_spikes"].sum()) > 0 and float(ref.stats["y_spikes"].sum()) > 0  # not vacuous
    return ref, out


@pytest.mark.parametrize("T", [1, 4])
@pytest.mark.parametrize("gating", ["gain", "product"])
@pytest.mark.parametrize("coding", ["graded", "rate", "multispike"])
def test_counts_identical_to_reference(coding, gating, T):
    n_layer = 2 if (T == 4) == (gating == "gain") else 1
    net = small_net(gating, n_layer, seed=T)
    ids = token_ids(2 if coding != "graded" else 1, 12 if T == 1 else 8, seed=T)
    assert_matches_reference(net, ids, SimSettings(timesteps=T, coding=coding, max_spikes=3))


@pytest.mark.parametrize("coding", ["rate", "graded"])
def test_plasticity_switches(coding):
    net = small_net("gain", 2, seed=5)
    ids = token_ids(1, 10, seed=5)
    plast = Plasticity(freeze_after=7, reset_every=4, decay_tau_tokens=3.0)
    ref, out = assert_matches_reference(net, ids, SimSettings(timesteps=3, coding=coding), plasticity=plast)
    # the switches matter: the intact run differs
    intact = reference.simulate(net, ids, SimSettings(timesteps=3, coding=coding), stepwise=True)
    assert not torch.allclose(intact.logits, out.logits)


@pytest.mark.parametrize("coding", ["rate", "multispike", "graded"])
def test_population_dynamics_match_semantics(coding):
    """The Brian2 IF neuron (threshold/reset strings) alone, against semantics.run_population,
    on currents that include exact boundaries, large and negative values."""
    gen = torch.Generator().manual_seed(3)
    current = torch.cat([torch.randn(200, generator=gen, dtype=torch.float64) * 2,
                         torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, -1.0, 7.25, 100.0, 1e-12])])
    settings = SimSettings(timesteps=5, coding=coding, max_spikes=3)
    want_c, want_m = run_population(current, settings, 0.5)
    got_c, got_m = brian2_backend.run_population(current, settings, 0.5)
    assert torch.equal(got_c, want_c)
    assert float((got_m - want_m).abs().max()) <= 1e-12
    assert float(want_c.sum()) > 0


def test_registry_and_batch_rows_independent():
    net = small_net("product", 1, seed=7)
    ids = token_ids(2, 8, seed=7)
    both = bs.simulate(net, ids, backend="brian2", timesteps=2, coding="rate", record=("counts",))
    assert both.backend == "brian2" and set(both.records) == {"x_counts", "y_counts"}
    assert both.records["x_counts"].shape == (2, 8, 1, 2, 32)
    for key in EVENT_KEYS:
        assert both.stats[key].shape == (2, 8) and both.stats[key].dtype == torch.float64
    one = bs.simulate(net, ids[1], backend="brian2", timesteps=2, coding="rate", record=("counts",), progress=True)
    assert torch.equal(one.logits[0], both.logits[1])
    assert torch.equal(one.records["y_counts"][0], both.records["y_counts"][1])


def test_invalid_options_raise_config_error():
    net = small_net("gain", 1, seed=8)
    ids = token_ids(1, 2)
    ok = SimSettings(timesteps=2, coding="rate")
    with pytest.raises(ConfigError, match="cpu only"):  # (a machine without CUDA refuses it even earlier)
        check_request("brian2", ok, torch.device("cuda"), torch.float64)
    ok = dict(backend="brian2", timesteps=ok.timesteps, coding=ok.coding)  # checked once, by the registry
    with pytest.raises(ConfigError, match="biophysical"):  # a biophysical option in discrete mode
        bs.simulate(net, ids, token_ms=50, **ok)
    with pytest.raises(ConfigError, match="discrete"):
        bs.simulate(net, ids, backend="brian2", mode="fixed-point")
    with pytest.raises(ConfigError, match="float64"):
        bs.simulate(net, ids, dtype=torch.float32, **ok)
    with pytest.raises(ConfigError, match="option"):
        bs.simulate(net, ids, chunk=4, **ok)
    with pytest.raises(ConfigError, match="target"):  # only Brian2 knows its targets
        bs.simulate(net, ids, target="cpp_standalone", **ok)
    with pytest.raises(ConfigError, match="record"):
        bs.simulate(net, ids, record=("bogus",), **ok)
    with pytest.raises(ConfigError, match="plasticity"):
        bs.simulate(net, ids, backend="brian2", plasticity={"forget": 1})


def _default_net():
    try:
        model = bs.load_model()
    except CheckpointError as exc:
        pytest.skip(f"no shipped default model: {exc}")
    from importlib import resources

    data = resources.files("bdh_spiking") / "data"
    calibration = (data / "calibration.txt").read_bytes()[:1024]
    text = (data / "heldout.txt").read_bytes()[:8]
    return bs.convert(model, gating="gain", calibration=calibration), torch.tensor(list(text))[None]


def test_default_model_rate_T4():
    net, ids = _default_net()
    started = time.perf_counter()
    _, out = assert_matches_reference(net, ids, SimSettings(timesteps=4, coding="rate"))
    assert time.perf_counter() - started < 120
    # also against the reference's default (chunked) form, which `compare` uses
    chunked = bs.simulate(net, ids, backend="reference", timesteps=4, coding="rate", record=("counts", "margins"))
    assert spike_differences(chunked, out)["non_tie_differences"] == 0
    assert float((out.logits - chunked.logits).abs().max() / chunked.logits.abs().max()) <= 1e-9


@pytest.mark.slow
@pytest.mark.parametrize("coding", ["rate", "multispike", "graded"])
def test_cython_target(coding):
    """Compiled (cython) code must round exactly like numpy: built without -ffast-math / FMA.
    Compiles into the user cache (first run: minutes), never into the working tree."""
    net = small_net("gain", 2, seed=9)
    ref, out = assert_matches_reference(net, token_ids(1, 6, seed=9), SimSettings(timesteps=3, coding=coding),
                                        target="cython")
    assert out.settings["target"] == "cython"
    assert out.settings["cache_dir"] == str(brian2_backend.default_cache_dir())
    assert any(brian2_backend.default_cache_dir().glob("*.so"))
    assert not math.isnan(float(out.logits.sum()))


def test_target_auto_follows_the_environment(monkeypatch):
    monkeypatch.setenv(brian2_backend.TARGET_ENV, "numpy")
    assert brian2_backend.resolve_target("auto") == "numpy"
    assert brian2_backend.resolve_target(None) == "numpy"
    monkeypatch.setenv(brian2_backend.TARGET_ENV, "fortran")
    with pytest.raises(ConfigError, match="BDH_SPIKING_BRIAN2_TARGET"):
        brian2_backend.resolve_target("auto")
    assert brian2_backend.check_target("numpy") == "numpy"  # an explicit target ignores the variable


def test_bad_target_environment_fails_before_any_work(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv(brian2_backend.TARGET_ENV, "fortran")
    want = ["error: BDH_SPIKING_BRIAN2_TARGET='fortran' is not a brian2 codegen target: use one of auto, cython, numpy"]
    rc, out, err = run_cli("bdh-convert", "--backend", "brian2", "--max-tokens", "8", timeout=120)
    assert rc == 2 and err.strip().splitlines() == want and out == ""
    rc, out, err = run_cli("bdh-study", "--quick", "--bio-tokens", "4", "--out", tmp_path / "s", timeout=120)
    assert rc == 2 and err.strip().splitlines() == want and not (tmp_path / "s").exists()


def test_no_c_compiler_falls_back_to_numpy_with_a_warning(tmp_path):
    """A compiler that does not exist (CC/CXX) and an empty cache: 'auto' and 'cython' both fall
    back to numpy, with one warning line; the simulation still runs."""
    import subprocess
    import sys

    code = ("from bdh_spiking.backends import brian2 as b\n"
            f"cache = {str(tmp_path / 'cache')!r}\n"
            "first = b.resolve_target('auto', cache)\n"
            "print(first, b.resolve_target('cython', cache))\n")
    env = {k: v for k, v in os.environ.items() if k != brian2_backend.TARGET_ENV}
    env.update(CC=str(tmp_path / "no-cc"), CXX=str(tmp_path / "no-cxx"), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["numpy", "numpy"]
    assert proc.stderr.count("falling back to the numpy target") == 1  # warned once per process, not per call
    assert "Removing unsupported flag" not in proc.stderr  # Brian2's own noise is kept out


def test_cold_cython_cache_says_it_compiles(tmp_path):
    """An empty cache: one line on stderr says the first run compiles (where a compiler works);
    without one the fallback warning is printed instead."""
    import subprocess
    import sys

    code = ("from bdh_spiking.backends import brian2 as b\n"
            f"cache = {str(tmp_path / 'cache')!r}\n"
            "first = b.resolve_target('auto', cache)\n"
            "print(first, b.resolve_target('auto', cache))\n")
    env = {k: v for k, v in os.environ.items() if k != brian2_backend.TARGET_ENV}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    targets = proc.stdout.split()
    assert targets[0] == targets[1]
    if targets[0] == "cython":
        assert proc.stderr.count("compiling the network's code into") == 1
    else:
        assert proc.stderr.count("falling back to the numpy target") == 1
