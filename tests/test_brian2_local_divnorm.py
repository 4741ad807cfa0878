"""Rungs local-plasticity and divisive-norm of the biophysical ladder (issue 16, rungs 6-7) on the
psc network: they run finite within the clip limit, the plastic weights stay within their bound
and decay continuously in time, and bad parameters are refused before any work."""

from __future__ import annotations

import math

import pytest
import torch

import bdh_spiking as bs
from bdh_spiking.errors import ConfigError

pytest.importorskip("brian2")

from test_brian2_biophysical import ids_for, tiny  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated - use:DeprecationWarning")
BIO = dict(backend="brian2", mode="biophysical", token_ms=40)


@pytest.fixture(scope="module")
def small():
    return tiny(seed=1, n_layer=2, gating="gain")[1], ids_for(1, 3, seed=1)


def test_rungs_run_finite_with_bounded_weights(small):
    """divisive-norm (with local-plasticity below it) runs a 2-layer tiny model for 3 bytes with
    finite logits and the clipped fraction within 0.02; with a tight bound (w_max 0.05; the psc
    rung's weights reach ~5 here) every weight stays within it and some reach it."""
    net, ids = small
    out = bs.simulate(net, ids, ladder="divisive-norm", w_max=0.05, record=("counts", "state"), **BIO)
    s = out.settings
    assert s["rung"] == "divisive-norm" and s["ladder"][-2:] == ["local-plasticity", "divisive-norm"]
    assert torch.isfinite(out.logits).all() and out.logits.shape == (1, 3, 256)
    assert out.records["x_counts"].sum() > 0 and out.records["y_counts"].sum() > 0
    assert 0.0 <= s["clipped_fraction"] <= 0.02 and 0.0 < s["fraction_active"] < 1.0
    S = out.records["state"]
    assert torch.isfinite(S).all() and S.abs().max() <= 0.05 and S.abs().max() > 0.045
    assert s["negative_rates"] == 0 and s["dale_violations"] == 0  # rungs onoff and dale below it


def test_decay_is_continuous_in_time():
    """Writes frozen after byte 0 (freeze_after 1): the weight written at the first byte's
    plasticity pulse (its last fine step, 39.9 ms) then only decays. Against the same run without
    decay (tau_decay_ms inf: the write is identical, S being 0 before it), every synapse holds
    exactly exp(-81 ms / tau) of it at the end of the 120.1 ms run: the graded steps at 40, 41,
    .., 120 ms each multiply it by exp(-1 ms / tau), 1/tau = 1/tau_decay_ms + 1/(decay_tau_tokens token_ms)."""
    _, net = tiny(seed=2, n_layer=1, gating="gain")
    ids = ids_for(1, 3, seed=2)
    common = dict(ladder="local-plasticity", w_max=1e6, record=("state",), plasticity={"freeze_after": 1}, **BIO)
    held = bs.simulate(net, ids, tau_decay_ms=math.inf, **common).records["state"]
    # tau_decay_ms 200 and the plasticity switch decay_tau_tokens 2 (2 bytes of 40 ms): their rates add
    plast = {"freeze_after": 1, "decay_tau_tokens": 2}
    decayed = bs.simulate(net, ids, tau_decay_ms=200.0, **{**common, "plasticity": plast}).records["state"]
    on = held.abs() > 1e-9
    assert on.sum() > 10 and torch.equal(decayed[~on], held[~on])
    ratio = decayed[on] / held[on]
    expected = math.exp(-81.0 * (1 / 200.0 + 1 / 80.0))
    torch.testing.assert_close(ratio, torch.full_like(ratio, expected), rtol=1e-9, atol=0)


def test_bad_parameters_refused_before_any_work(small, monkeypatch):
    from bdh_spiking.backends.brian2 import psc

    monkeypatch.setattr(psc, "_run", lambda *a: pytest.fail("the network was run"))
    net, ids = small
    cases = [(dict(ladder="local-plasticity", w_max=0.0), "w_max must be > 0"),
             (dict(ladder="local-plasticity", tau_decay_ms=-5.0), "tau_decay_ms must be > 0"),
             (dict(ladder="local-plasticity", local_payload="rotate"), "unknown local_payload"),
             (dict(ladder="local-plasticity", plasticity={"reset_every": 2}), "reset_every"),
             (dict(ladder="divisive-norm", norm_sigma=0.0), "norm_sigma must be > 0"),
             (dict(ladder="divisive-norm", tau_pool_ms=0.5), "tau_pool_ms"),
             (dict(ladder="divisive-norm", subtract_mean="yes"), "true or false"),
             (dict(ladder="psc", tau_gate_ms=math.inf), "finite")]
    for opts, phrase in cases:
        with pytest.raises(ConfigError, match=phrase):
            bs.simulate(net, ids, **BIO, **opts)


def test_cli_refuses_bad_rung_parameters_before_conversion(run_main, tmp_path):
    from test_brian2_ladder import _tiny_checkpoint

    common = _tiny_checkpoint(tmp_path)
    bad = tmp_path / "bad.toml"
    for text, rung, phrase in (("[local]\nw_max = -1.0\n", "local-plasticity", "w_max must be > 0"),
                               ("[divnorm]\ntau_pool_ms = 0.1\n", "divisive-norm", "tau_pool_ms")):
        bad.write_text(text)
        code, stdout, stderr = run_main("bdh-convert", *map(str, common), "--ladder", rung, "--bio-params", str(bad))
        assert code == 2 and phrase in stderr.strip().splitlines()[-1] and "converted in" not in stderr + stdout


@pytest.mark.slow
def test_divisive_norm_cpp_standalone_matches_runtime(tmp_path, monkeypatch, small):
    """The divisive-norm network (with local-plasticity below it) built by cpp_standalone against
    the runtime device with the cython target: the same spikes and logits."""
    from bdh_spiking.backends.brian2.devices import CACHE_ENV, cxx_compiler

    if cxx_compiler() is None:
        pytest.skip("no C++ compiler")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    net, ids = small
    common = dict(BIO, ladder="divisive-norm", record=("counts", "state"))
    sa = bs.simulate(net, ids, brian2_device="cpp_standalone", **common)
    rt = bs.simulate(net, ids, brian2_device="runtime", target="cython", **common)
    assert sa.settings["brian2_device"] == "cpp_standalone" and sa.records["x_counts"].sum() > 0
    assert torch.equal(sa.records["x_counts"], rt.records["x_counts"])
    assert torch.equal(sa.records["y_counts"], rt.records["y_counts"])
    torch.testing.assert_close(sa.logits, rt.logits, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(sa.records["state"], rt.records["state"], rtol=1e-9, atol=1e-9)
