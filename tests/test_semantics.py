"""The semantics package and the IR/registry checks built on it (issue 14: one semantics)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bdh_spiking as bs
from bdh_spiking.conversion.calibration import collect_stats, thresholds
from bdh_spiking.errors import BDHError, ConfigError, NetworkFormatError
from bdh_spiking.semantics import FanOut, Plasticity, SimSettings, event_counts
from bdh_spiking.semantics.activation import Activation, replaced
from bundle_edit import rewrite

CALIB = (b"the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. " * 40)


@pytest.fixture(scope="module")
def net_ids():
    from conftest import make_model

    model = make_model(seed=3)
    net = bs.convert(model, calibration=CALIB)
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    return model, net, ids


# -- defect 2: quantile thresholds are exact order statistics, never clamped to the kept values ---
def test_head_quantile_is_the_true_order_statistic(model_factory):
    model = model_factory(seed=1, n_layer=1, n_embd=32, n_head=2, mlp_internal_dim_multiplier=16)  # N=256 per head
    ids = torch.tensor(list(CALIB[:2048]), dtype=torch.int64)
    q = 0.999
    stats = collect_stats(model.double(), ids, "product", seq_len=256, quantile=q)
    theta, _ = thresholds(stats["x"], "head", q)
    pooled = []
    model(ids.view(8, 256), probe=lambda layer, x, xc, yc: pooled.append(F.relu(xc)))
    values = torch.cat([p.permute(1, 0, 2, 3).reshape(2, -1) for p in pooled], dim=-1)  # H, tokens*N
    rank = int(np.floor((1 - q) * values.shape[-1]))
    truth = torch.sort(values, dim=-1, descending=True).values[:, rank]
    assert rank >= 64  # the old code kept 64 values and silently returned the 64th
    assert torch.equal(theta[0, :, 0], truth)


def test_a_quantile_beyond_what_is_kept_is_refused():
    from bdh_spiking.conversion.calibration import ActivationStats

    stats = ActivationStats(top=torch.ones(1, 1, 2, 4), active=torch.ones(1, 1, 2), tokens=1000,
                            head_top=torch.ones(1, 1, 4))
    with pytest.raises(ConfigError, match="kept only 4"):
        stats.quantile(0.99)


# -- defect 3: chunk must be an integer >= 1 on every backend that takes it ------------------------
@pytest.mark.parametrize("chunk", [0, -1, 2.5, True, "8"])
def test_bad_chunk_is_one_config_error(net_ids, chunk):
    _, net, ids = net_ids
    with pytest.raises(ConfigError, match="chunk must be an integer >= 1"):
        bs.simulate(net, ids, backend="reference", chunk=chunk)


def test_chunk_minus_one_no_longer_returns_garbage(net_ids):
    _, net, ids = net_ids
    good = bs.simulate(net, ids, chunk=5)
    assert torch.isfinite(good.logits).all() and good.events["spikes"] > 0


# -- the IR: v_init stays assignable, but nothing undefined runs, saves or loads --------------------
@pytest.mark.parametrize("bad", [1.0, 1.2, 5, -3, float("nan"), "0.5", True])
def test_invalid_v_init_is_refused_everywhere(net_ids, tmp_path, bad):
    _, net, ids = net_ids
    good = net.v_init
    net.save(tmp_path / "ok.bdhsnn")
    net.v_init = bad  # an assignable public attribute
    try:
        with pytest.raises(NetworkFormatError, match="v_init"):
            bs.simulate(net, ids)
        with pytest.raises(NetworkFormatError, match="v_init"):
            net.save(tmp_path / "bad.bdhsnn")
        assert not (tmp_path / "bad.bdhsnn").exists()
    finally:
        net.v_init = good
    # a file whose manifest says so is refused on load (written by hand: save() refuses)
    src, dst = tmp_path / "ok.bdhsnn", tmp_path / "hand.bdhsnn"
    rewrite(src, dst, lambda m: m.update(v_init=bad if not (isinstance(bad, float) and bad != bad) else "nan"))
    with pytest.raises(NetworkFormatError, match="v_init") as err:
        bs.SpikingNetwork.load(dst)
    assert isinstance(err.value, BDHError)


def test_v_init_assignment_changes_the_run(net_ids):
    _, net, ids = net_ids
    a = bs.simulate(net, ids, timesteps=4)
    net.v_init = 0.25
    try:
        b = bs.simulate(net, ids, timesteps=4)
    finally:
        net.v_init = 0.5
    assert a.events["spikes"] != b.events["spikes"]


def test_dims_are_typed(net_ids):
    _, net, _ = net_ids
    d = net.dims
    assert (d.L, d.H, d.D, d.N, d.V, d.HN) == (2, 2, 32, 64, 256, 128)
    assert d.as_dict() == {"L": 2, "H": 2, "D": 32, "N": 64, "V": 256, "HN": 128}
    with pytest.raises(TypeError):
        d["L"]  # noqa: B018


# -- the registry normalises every request once ------------------------------------------------------
def test_registry_normalises_and_refuses(net_ids):
    _, net, ids = net_ids
    a = bs.simulate(net, ids, record="counts")  # a string is one name, not letters
    assert set(a.records) == {"x_counts", "y_counts"}
    with pytest.raises(ConfigError, match="integers"):
        bs.simulate(net, ids.double() + 0.5)
    with pytest.raises(ConfigError, match="unknown options"):
        bs.simulate(net, ids, backend="reference", mode="fixed-point", chunk=4)
    with pytest.raises(ConfigError, match="float64, float32"):
        bs.simulate(net, ids, dtype=torch.float16)
    with pytest.raises(ConfigError, match="plasticity"):
        bs.simulate(net, ids, plasticity=[("freeze_after", 3)])
    from bdh_spiking.backends import parse_backends

    for spec in ("", "all,reference", "reference,reference"):
        with pytest.raises(ConfigError):
            parse_backends(spec)


def test_plasticity_answers_each_token():
    p = Plasticity(freeze_after=3, reset_every=4, decay_tau_tokens=2.0)
    rules = [p.at(t) for t in range(6)]
    assert [r.reset for r in rules] == [True, False, False, False, True, False]
    assert [r.write for r in rules] == [True, True, True, False, False, False]
    assert rules[0].decay is None and rules[4].decay is None and rules[1].decay == pytest.approx(np.exp(-0.5))
    assert Plasticity().at(5).decay is None


def test_fan_out_is_the_one_rule_behind_event_counts(net_ids):
    _, net, ids = net_ids
    for gating in ("gain", "product"):
        net.gating = gating
        try:
            r = bs.simulate(net, ids, timesteps=2)
            assert r.events == event_counts(r.stats, net, SimSettings(timesteps=2))
        finally:
            net.gating = "product"
        fan = FanOut.of(net.dims, gating)
        tot = {k: float(v.sum()) for k, v in r.stats.items()}
        assert r.events["synaptic_events"] == tot["x_spikes"] * fan.x_spike + tot["y_spikes"] * fan.y_spike


# -- the activation-replacement mechanism ------------------------------------------------------------
def test_replaced_activation_is_used_and_restored(net_ids):
    model, _, ids = net_ids
    plain, _ = model(ids)
    with replaced(model, Activation()):  # ReLU: the model itself
        same, _ = model(ids)
    assert torch.equal(plain, same)

    class Halved(Activation):
        def x(self, layer, current):
            return 0.5 * F.relu(current)

    with replaced(model, Halved()):
        other, _ = model(ids)
    assert not torch.allclose(plain, other)
    assert model.activation is None and torch.equal(model(ids)[0], plain)
