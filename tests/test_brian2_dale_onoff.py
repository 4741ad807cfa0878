"""Rungs dale and onoff of the biophysical ladder (issue 16) on the psc network: Dale's law by
inhibitory relay populations, signed rates carried by ON/OFF pairs; both constraints counted on
the built network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bdh_spiking as bs
from bdh_spiking.errors import ConfigError
from bdh_spiking.semantics.ladder import BUILT, parse_ladder, rungs_through

pytest.importorskip("brian2")

from test_brian2_biophysical import ids_for, tiny  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated - use:DeprecationWarning")


def _run(monkeypatch, rung, gating, **options):
    """simulate at ``rung`` (tiny 2-layer model, 3 bytes, 40 ms per byte) and the PscNetwork it built."""
    from bdh_spiking.backends.brian2 import psc

    built = []
    real = psc.run_network
    monkeypatch.setattr(psc, "run_network", lambda pn, *a: (built.append(pn), real(pn, *a))[1])
    _, net = tiny(seed=1, n_layer=2, gating=gating)
    out = bs.simulate(net, ids_for(1, 3, seed=1), backend="brian2", mode="biophysical", ladder=rung, token_ms=40,
                      record=("counts", "state"), **options)
    return out, built[0]


def _matrix(pn, name, shape):
    """The signed weights (pre unit, post unit) one graded projection carries in the built network:
    its direct synapses plus those of its relay (mapped back to the unit each relay relays)."""
    m, s = np.zeros(shape), pn.syn
    if name in s:
        np.add.at(m, (np.asarray(s[name].i[:]), np.asarray(s[name].j[:])), np.asarray(s[name].w[:]))
    if f"{name}_inh_in" in s:
        into, out = s[f"{name}_inh_in"], s[f"{name}_inh_out"]
        assert np.all(np.asarray(into.w[:]) == 1.0) and np.all(np.asarray(out.w[:]) < 0)
        relayed = np.empty(len(into.i[:]), dtype=int)
        relayed[np.asarray(into.j[:])] = np.asarray(into.i[:])
        np.add.at(m, (relayed[np.asarray(out.i[:])], np.asarray(out.j[:])), np.asarray(out.w[:]))
    return m


def _check_common(out, rung):
    s = out.settings
    assert s["rung"] == rung and s["ladder"] == list(rungs_through(rung))
    assert torch.isfinite(out.logits).all() and out.records["x_counts"].sum() > 0 and out.records["y_counts"].sum() > 0
    assert 0.0 <= s["clipped_fraction"] <= 0.02
    assert s["dale_violations"] == 0  # counted over every static projection, interneurons included
    pops = s["inhibitory_populations"]
    assert pops and all(p["units"] > 0 and p["synapses_out"] > 0 for p in pops)
    lif = [p for p in pops if p["kind"] == "lif"]
    assert [p["name"] for p in lif] == ["D_inh"]
    # noise 0: every y spike fires its interneuron one step later (a spike in the run's last step has no later step)
    assert 0 <= lif[0]["presynaptic_spikes"] - lif[0]["spikes"] <= 1 and lif[0]["spikes"] > 0
    return {p["name"]: p for p in pops}


def test_dale_splits_every_projection_exactly(monkeypatch):
    """Rung dale: Dale violations 0 on the built network, while the direct and relayed synapses of
    E, E_v and D together carry exactly psc's signed weights (the split changes dynamics only);
    the rates are still signed (negative_rates > 0)."""
    from bdh_spiking.backends.brian2.topology import connectivity, projection_weights

    out, pn = _run(monkeypatch, "dale", "gain")
    pops = _check_common(out, "dale")
    assert set(pops) == {"E_inh", "E_v_inh", "D_inh"}
    assert out.settings["negative_rates"] > 0
    d, B = pn.dims, pn.B
    conn, wts = connectivity(d.L, B, d.H, d.D, d.N), projection_weights(pn.w, d.L, B, d.H, d.D, d.N)
    for name, pre in (("E", d.L * B * d.D), ("E_v", d.L * B * d.H * d.D)):
        ref = np.zeros((pre, d.L * B * d.H * d.N))
        np.add.at(ref, conn[name], wts[name])
        np.testing.assert_array_equal(_matrix(pn, name, ref.shape), ref)
        assert pops[f"{name}_inh"]["units"] == int(((ref < 0).any(axis=1)).sum())
    dec = np.zeros((d.L * B * d.H * d.N, d.L * B * d.D))  # the decoder, its relay interneurons mapped back
    np.add.at(dec, (np.asarray(pn.syn["D"].i[:]), np.asarray(pn.syn["D"].j[:])), np.asarray(pn.syn["D"].w[:]))
    relay = np.asarray(pn.syn["D_inh_in"].i[:])[np.argsort(np.asarray(pn.syn["D_inh_in"].j[:]))]
    np.add.at(dec, (relay[np.asarray(pn.syn["D_inh_out"].i[:])], np.asarray(pn.syn["D_inh_out"].j[:])),
              np.asarray(pn.syn["D_inh_out"].w[:]))
    assert (dec > 0).any() and (dec < 0).any() and np.all(np.asarray(pn.syn["D"].w[:]) > 0)
    pre = {name: (i, w) for name, i, w in pn.static_projections()}
    assert {"res", "attn", "y", "x", "E_inh", "E_v_inh", "D_inh"} <= set(pre)


def test_onoff_pairs_are_non_negative_and_exact(monkeypatch):
    """Rung onoff (product gating): negative_rates 0 over the ON/OFF units, the payload pair and the
    relays; Dale violations still 0; every consumer reads on - off: the ON projection carries W and
    the OFF projection -W (direct and relayed synapses together), the next layer +1 and -1."""
    from bdh_spiking.backends.brian2.topology import connectivity, projection_weights

    out, pn = _run(monkeypatch, "onoff", "product")
    pops = _check_common(out, "onoff")
    assert out.settings["negative_rates"] == 0
    assert {"E_on_inh", "E_off_inh", "E_v_on_inh", "E_v_off_inh", "next_off_inh", "D_inh"} == set(pops)
    units = pn.rate_units()
    assert units["res"] == {"xon": "neg_on", "xoff": "neg_off", "xinon": "neg_in_on", "xinoff": "neg_in_off"}
    assert "qon" in units["x"] and "E_on_inh" in units
    for group in ("res", "attn"):  # the pairs were exercised: both halves of the pairs were active
        g = pn.groups[group]
        assert (np.asarray(g.von[:]) > 0).any() and (np.asarray(g.voff[:]) > 0).any()
    d, B = pn.dims, pn.B
    conn, wts = connectivity(d.L, B, d.H, d.D, d.N), projection_weights(pn.w, d.L, B, d.H, d.D, d.N)
    for name, pre in (("E", d.L * B * d.D), ("E_v", d.L * B * d.H * d.D)):
        ref = np.zeros((pre, d.L * B * d.H * d.N))
        np.add.at(ref, conn[name], wts[name])
        np.testing.assert_array_equal(_matrix(pn, f"{name}_on", ref.shape), ref)
        np.testing.assert_array_equal(_matrix(pn, f"{name}_off", ref.shape), -ref)
    n = d.L * B * d.D
    up = np.eye(n, k=B * d.D)  # residual unit (l, b, d) -> (l + 1, b, d)
    np.testing.assert_array_equal(_matrix(pn, "next_on", (n, n)), up)
    np.testing.assert_array_equal(_matrix(pn, "next_off", (n, n)), -up)


def test_ladder_order_and_refusals_with_the_new_rungs():
    assert parse_ladder("all") == BUILT and BUILT[3:5] == ("dale", "onoff")
    assert rungs_through("onoff") == ("rate-linearized", "lif", "psc", "dale", "onoff")
    assert parse_ladder("psc,dale,onoff") == ("psc", "dale", "onoff")
    for spec, phrase in (("dale,psc", "out of order"), ("onoff,dale", "out of order"), ("dale,dale", "out of order"),
                         ("onoff,Dale", "unknown rung")):
        with pytest.raises(ConfigError, match=phrase):
            parse_ladder(spec)
    _, net = tiny(seed=2)
    with pytest.raises(ConfigError, match="out of order"):
        bs.simulate(net, ids_for(1, 2), backend="brian2", mode="biophysical", ladder="dale,psc")


@pytest.mark.slow
def test_onoff_builds_and_runs_under_cpp_standalone(tmp_path, monkeypatch):
    """The onoff network (relays, pairs, subexpression dendrites) is Brian2 objects only: built by
    cpp_standalone it runs with finite logits and both constraints met on the built network."""
    from bdh_spiking.backends.brian2.devices import CACHE_ENV, cxx_compiler

    if cxx_compiler() is None:
        pytest.skip("no C++ compiler")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    out, _ = _run(monkeypatch, "onoff", "product", brian2_device="cpp_standalone")
    assert out.settings["brian2_device"] == "cpp_standalone"
    assert out.settings["build_dir"].startswith(str(tmp_path / "cache"))
    _check_common(out, "onoff")
    assert out.settings["negative_rates"] == 0
