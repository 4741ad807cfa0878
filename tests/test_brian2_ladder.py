"""The biophysical mode's fidelity ladder (issue 15): rungs as equation changes, cumulative, checked
before any work; the LIF f-I curve of semantics/lif.py; each rung on a tiny model for a few tokens
(numpy target) reporting its own clipped fraction, rates and fidelity."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import bdh_spiking as bs
from bdh_spiking.errors import ConfigError
from bdh_spiking.semantics.ladder import BUILT, LADDER, parse_ladder, rungs_through
from bdh_spiking.semantics.lif import LifCurve, lif_drive_for_rate, lif_rate_hz

TAU_M, T_REF, R_MAX = 20.0, 2.0, 200.0


def test_parse_ladder_orders_and_refuses():
    assert parse_ladder("all") == BUILT == LADDER
    assert parse_ladder("lif") == ("lif",)
    assert parse_ladder(["rate-linearized", "lif"]) == ("rate-linearized", "lif")
    assert rungs_through("lif") == ("rate-linearized", "lif")  # cumulative
    for spec, phrase in (("lif,rate-linearized", "out of order"), ("lif,lif", "out of order"),
                         ("linear", "unknown rung"), ("", "no rung")):
        with pytest.raises(ConfigError, match=phrase):
            parse_ladder(spec)
    assert LADDER[:3] == ("rate-linearized", "lif", "psc")


def test_lif_curve_matches_a_simulated_neuron_and_inverts():
    """f(mu) against LIF neurons integrated step by step (exact exponential update, dt 10 us, 0.5 s),
    and f^-1(f(mu)) = mu."""
    dt, steps = 0.01, 50_000
    mu = np.array([1.05, 1.5, 3.0, 8.0])
    v, refr, spikes = np.zeros(4), np.zeros(4), np.zeros(4)
    first, last = np.full(4, np.nan), np.zeros(4)
    decay = math.exp(-dt / TAU_M)
    for k in range(steps):
        free = refr <= 0
        v = np.where(free, mu + (v - mu) * decay, v)
        refr -= dt
        fired = v > 1.0
        spikes += fired
        first = np.where(fired & np.isnan(first), k * dt, first)
        last = np.where(fired, k * dt, last)
        v[fired], refr[fired] = 0.0, T_REF
    simulated = 1000.0 * (spikes - 1) / (last - first)  # mean rate over whole interspike intervals
    np.testing.assert_allclose(simulated, lif_rate_hz(mu, TAU_M, T_REF), rtol=0.01)
    mus = np.array([1.001, 1.2, 2.0, 7.0, 50.0])
    back = lif_drive_for_rate(lif_rate_hz(mus, TAU_M, T_REF), TAU_M, T_REF)
    np.testing.assert_allclose(back, mus, rtol=1e-9)
    assert lif_rate_hz(np.array([0.5, 1.0]), TAU_M, T_REF).tolist() == [0.0, 0.0]


def test_lif_curve_gain_calibration_and_torch_gradient():
    c = LifCurve(TAU_M, T_REF, R_MAX)
    assert float(c.rate_hz(np.array(1.0))) == pytest.approx(R_MAX, rel=1e-12)  # I = 1 -> top rate
    assert float(c.rate_hz(np.array(0.0))) == 0.0 and float(c.rate_hz(np.array(-0.3))) == 0.0
    assert float(c.rate_hz(np.array(2.0))) > R_MAX  # no clip: the curve keeps rising
    I = np.array([1e-3, 0.1, 0.5, 1.0, 1.7])
    np.testing.assert_allclose(c.current(c.rate_hz(I)), I, rtol=1e-9)
    t = torch.tensor([0.2, 0.8], dtype=torch.float64, requires_grad=True)
    c.rate_hz(t).sum().backward()
    assert torch.isfinite(t.grad).all() and (t.grad > 0).all()
    with pytest.raises(ConfigError, match="1/t_ref"):
        LifCurve(TAU_M, T_REF, 600.0)


pytest.importorskip("brian2")

from test_brian2_biophysical import ids_for, tiny  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated - use:DeprecationWarning")


def test_bad_ladder_and_overdesigned_network_refused_before_any_work():
    model, net = tiny(seed=2)
    ids = ids_for(1, 2)
    for spec, phrase in (("lif,rate-linearized", "out of order"), ("spiking", "unknown rung")):
        with pytest.raises(ConfigError, match=phrase):
            bs.simulate(net, ids, backend="brian2", mode="biophysical", ladder=spec)
    over = bs.convert(model, calibration=bytes(range(256)) * 2, design_max_spikes=4)
    with pytest.raises(ConfigError, match="one spike per step"):
        bs.simulate(over, ids, backend="brian2", mode="biophysical", ladder="lif")


def test_each_rung_runs_and_reports_its_own_measures():
    """Both rungs on a one-layer tiny model, 3 bytes at 60 ms: finite logits, the rung's own
    equations (lif: the LIF curve, the bias at rheobase), clipped mass below the limit, rates and
    activity measured, decoded x close to the dense model's."""
    from bdh_spiking.report import dense_reference, fidelity

    model, net = tiny(seed=1)
    ids = ids_for(1, 3, seed=1)
    dense = dense_reference(model, ids)
    rows = {}
    for rung in ("rate-linearized", "lif"):  # rung psc: tests/test_brian2_psc.py
        out = bs.simulate(net, ids, backend="brian2", mode="biophysical", ladder=rung, token_ms=60,
                          record=("counts", "decoded"))
        s = out.settings
        assert torch.isfinite(out.logits).all()
        assert s["rung"] == rung and tuple(s["ladder"]) == rungs_through(rung)
        assert 0.0 <= s["clipped_fraction"] <= 0.02 and s["clipped_fraction_x"] <= 0.02
        assert 0.05 < s["fraction_active"] < 1.0
        assert 0.0 < s["rate_hz_median"] < 1000.0 / T_REF
        assert s["bio_s_per_wall_s"] > 0
        f = fidelity(dense, out, ids)
        assert min(f["corr_x_per_layer"]) > 0.9, (rung, f["corr_x_per_layer"])
        rows[rung] = (out, s)
    # the lif neuron's concave curve fires faster at the same current than the linear one
    assert rows["lif"][1]["rate_hz_median"] > rows["rate-linearized"][1]["rate_hz_median"]
    assert not torch.equal(rows["lif"][0].records["x_counts"], rows["rate-linearized"][0].records["x_counts"])


def _tiny_checkpoint(tmp_path):
    from bdh_spiking.checkpoint import save_checkpoint
    from bdh_spiking.text import shipped_text_path

    model, _ = tiny(seed=4)
    ckpt, calib = tmp_path / "tiny.pt", tmp_path / "calib.txt"
    save_checkpoint(ckpt, model)
    calib.write_bytes(shipped_text_path("calibration").read_bytes()[:1024])
    return (ckpt, "--calibration", calib, "--backend", "brian2", "--mode", "biophysical", "--max-tokens", "3",
            "--brian2-target", "numpy", "--token-ms", "30")


def test_cli_refuses_a_bad_ladder_before_any_work(run_cli, tmp_path):
    common = _tiny_checkpoint(tmp_path)
    for spec, phrase in (("lif,rate-linearized", "out of order"),):  # the other refusals: parse_ladder's test
        code, stdout, stderr = run_cli("bdh-convert", *common, "--ladder", spec)
        assert code == 2 and phrase in stderr.strip().splitlines()[-1] and "converted in" not in stderr + stdout
    code, _, stderr = run_cli("bdh-convert", *common[:5], "--ladder", "lif")  # mode discrete
    assert code == 2 and "--mode biophysical" in stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_cli_ladder_table_json_and_plot(run_cli, tmp_path):
    common = _tiny_checkpoint(tmp_path)
    out_json, plots = tmp_path / "ladder.json", tmp_path / "plots"
    code, stdout, stderr = run_cli("bdh-convert", *common, "--ladder", "all", "--json", out_json, "--plots", plots)
    assert code == 0, stderr
    assert "fidelity ladder" in stdout and "rate-linearized" in stdout and "lif" in stdout and "psc" in stdout
    doc = json.loads(out_json.read_text())
    rungs = ["rate-linearized", "lif", "psc", "dale", "onoff", "local-plasticity", "divisive-norm"]
    assert set(doc) == {"meta", "runs"} and doc["meta"]["ladder"] == rungs
    assert [r["rung"] for r in doc["runs"]] == rungs
    # psc: runtime here (conftest sets BDH_SPIKING_BRIAN2_DEVICE=runtime); the others always runtime
    assert [r["brian2_device"] for r in doc["runs"]] == ["runtime"] * 7
    assert [r.get("plastic_read") for r in doc["runs"]] == [None, None] + ["event"] * 5
    assert "brian2 device" in stdout and "bytes/s" in stdout and "bytes/s compares rungs" in stdout
    for r in doc["runs"]:
        for key in ("top1_agreement", "ce_rel_diff", "rate_hz_median", "fraction_active", "clipped_fraction",
                    "wall_s", "bio_s_per_wall_s"):
            assert math.isfinite(r[key]), key
    assert (plots / "ladder.png").stat().st_size > 1000
