"""Rung psc of the biophysical ladder (issue 15): the whole network as Brian2 objects (no
NetworkOperation), spikes delivered as postsynaptic currents; the Brian2 devices (runtime,
cpp_standalone, cuda_standalone) and their refusals before any work."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import bdh_spiking as bs
from bdh_spiking.errors import ConfigError

pytest.importorskip("brian2")

from test_brian2_biophysical import ids_for, tiny  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated - use:DeprecationWarning")


def test_psc_network_is_brian2_objects_only_and_runs_finite(monkeypatch):
    """The network the run hands to Brian2 has no NetworkOperation (only groups, synapses and
    monitors); a run on a 2-layer tiny model for 3 bytes has finite logits, counts that are whole
    spikes, a written plastic state, and the ladder measures within the clip limit."""
    import brian2 as b2

    from bdh_spiking.backends.brian2 import psc

    seen = []
    real_run = psc._run
    monkeypatch.setattr(psc, "_run", lambda objects, duration: (seen.extend(objects), real_run(objects, duration)))
    _, net = tiny(seed=1, n_layer=2, gating="gain")
    ids = ids_for(1, 3, seed=1)
    out = bs.simulate(net, ids, backend="brian2", mode="biophysical", ladder="psc", token_ms=40,
                      record=("counts", "decoded", "state"))
    s = out.settings
    assert s["rung"] == "psc" and s["ladder"] == ["rate-linearized", "lif", "psc"]
    assert s["brian2_device"] == "runtime"  # conftest: BDH_SPIKING_BRIAN2_DEVICE=runtime
    assert torch.isfinite(out.logits).all() and out.logits.shape == (1, 3, 256)
    counts = out.records["x_counts"]
    assert torch.equal(counts, counts.round()) and counts.min() >= 0 and counts.sum() > 0
    assert out.records["y_counts"].sum() > 0
    assert torch.isfinite(out.records["state"]).all() and out.records["state"].abs().sum() > 0
    assert 0.0 <= s["clipped_fraction"] <= 0.02
    assert 0.0 < s["fraction_active"] < 1.0 and 0.0 < s["rate_hz_median"] < 500.0
    # issue 16's counts on the built network: psc still has mixed-sign projections and signed rate units
    assert s["dale_violations"] > 0 and s["negative_rates"] > 0
    assert seen and not any(isinstance(o, b2.NetworkOperation) for o in seen)
    assert {type(o).__name__ for o in seen} == {"NeuronGroup", "Synapses", "StateMonitor"}


def test_devices_refused_before_any_work():
    _, net = tiny(seed=2)
    ids = ids_for(1, 2)
    cases = [(dict(ladder="rate-linearized", brian2_device="cpp_standalone"), "NetworkOperation"),
             (dict(ladder="lif", brian2_device="cpp_standalone"), "NetworkOperation"),
             (dict(ladder="psc", brian2_device="gpu"), "unknown brian2 device"),
             (dict(ladder="psc", threads=0), "threads"),
             (dict(ladder="psc,lif"), "out of order"), (dict(ladder="spiking"), "unknown rung")]
    if importlib.util.find_spec("brian2cuda") is None:
        cases.append((dict(ladder="psc", brian2_device="cuda_standalone"), "brian2cuda"))
    for opts, phrase in cases:
        with pytest.raises(ConfigError, match=phrase):
            bs.simulate(net, ids, backend="brian2", mode="biophysical", **opts)
    with pytest.raises(ConfigError, match="record"):  # the psc network has no membrane/weight monitors
        bs.simulate(net, ids, backend="brian2", mode="biophysical", ladder="psc", record=("v",))


def test_dendrite_clock_is_checked_and_samples_the_dendritic_sums(monkeypatch):
    """dendrite_dt_ms: refused unless a multiple of graded_dt_ms dividing token_ms and within the
    synaptic time constants; 2 ms puts the dendritic sums (their group and hence E's and E_v's
    summed variables) on a 2 ms clock and changes the run."""
    import brian2 as b2

    from bdh_spiking.backends.brian2 import psc

    _, net = tiny(seed=1, n_layer=2, gating="gain")
    ids = ids_for(1, 2, seed=1)
    common = dict(backend="brian2", mode="biophysical", ladder="psc", token_ms=40, record=("counts",))
    for value, phrase in ((1.5, "dendrite_dt_ms must be a whole multiple"), (10.0, "must not exceed tau_syn_ms"),
                          (0.0, "dendrite_dt_ms must be > 0")):
        with pytest.raises(ConfigError, match=phrase):
            bs.simulate(net, ids, dendrite_dt_ms=value, **common)
    seen = []
    real_run = psc._run
    monkeypatch.setattr(psc, "_run", lambda objects, duration: (seen.extend(objects), real_run(objects, duration)))
    slow = bs.simulate(net, ids, dendrite_dt_ms=2.0, **common)
    den = next(o for o in seen if o.name == "bdh_psc_den")
    assert float(den.clock.dt / b2.ms) == pytest.approx(2.0)
    assert float(next(o for o in seen if o.name == "bdh_psc_res").clock.dt / b2.ms) == pytest.approx(1.0)
    fast = bs.simulate(net, ids, **common)
    assert torch.isfinite(slow.logits).all() and not torch.equal(slow.logits, fast.logits)


def test_threads_above_one_warn_that_runs_are_not_reproducible(monkeypatch):
    """Measured: 2 OpenMP threads gave logits differing by 0.22 between two runs of 3 bytes (the
    summation order of a step's synaptic events varies): said once, before any work."""
    from bdh_spiking.backends.brian2 import devices

    monkeypatch.setattr(devices, "_WARNED", set())
    with pytest.warns(RuntimeWarning, match="not reproducible"):
        assert devices.check_device("cpp_standalone", "psc", 2) == "cpp_standalone"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        devices.check_device("cpp_standalone", "psc", 1)
        devices.check_device("runtime", "psc", 2)


def test_device_auto_and_missing_compiler(monkeypatch):
    from bdh_spiking.backends.brian2 import devices

    monkeypatch.delenv(devices.DEVICE_ENV, raising=False)
    assert devices.check_device("auto", "lif") == "runtime"
    monkeypatch.setattr(devices, "cxx_compiler", lambda: None)
    with pytest.raises(ConfigError, match="C\\+\\+ compiler"):
        devices.check_device("cpp_standalone", "psc")
    devices._WARNED.discard("nocxx")
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        assert devices.check_device(None, "psc") == "runtime"
    monkeypatch.setattr(devices, "cxx_compiler", lambda: "g++")
    assert devices.check_device(None, "psc") == "cpp_standalone"
    monkeypatch.setenv(devices.DEVICE_ENV, "runtime")
    assert devices.check_device(None, "psc") == "runtime"


def test_cli_refuses_standalone_for_runtime_rungs(run_cli, tmp_path):
    from test_brian2_ladder import _tiny_checkpoint

    common = _tiny_checkpoint(tmp_path)
    code, stdout, stderr = run_cli("bdh-convert", *common, "--ladder", "all", "--brian2-device", "cpp_standalone")
    assert code == 2 and "NetworkOperation" in stderr.strip().splitlines()[-1] and "converted in" not in stderr


@pytest.mark.slow
def test_cpp_standalone_matches_runtime(tmp_path, monkeypatch):
    """The psc rung built by cpp_standalone (cache in tmp_path; -O3 -march=native) against the same
    rung on the runtime device with the cython target (-O2; the same C expressions, both without
    fast-math or FMA contraction): spikes and logits agree exactly; a second standalone run reuses
    the build directory."""
    from bdh_spiking.backends.brian2.devices import CACHE_ENV, cxx_compiler

    if cxx_compiler() is None:
        pytest.skip("no C++ compiler")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    _, net = tiny(seed=1, n_layer=2, gating="gain")
    ids = ids_for(1, 3, seed=1)
    common = dict(backend="brian2", mode="biophysical", ladder="psc", token_ms=40, record=("counts", "state"))
    sa = bs.simulate(net, ids, brian2_device="cpp_standalone", **common)
    rt = bs.simulate(net, ids, brian2_device="runtime", target="cython", **common)  # the shared cython cache
    assert sa.settings["brian2_device"] == "cpp_standalone" and rt.settings["brian2_device"] == "runtime"
    assert sa.settings["build_dir"].startswith(str(tmp_path / "cache"))
    assert sa.records["x_counts"].sum() > 0
    assert torch.equal(sa.records["x_counts"], rt.records["x_counts"])
    assert torch.equal(sa.records["y_counts"], rt.records["y_counts"])
    torch.testing.assert_close(sa.logits, rt.logits, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(sa.records["state"], rt.records["state"], rtol=1e-9, atol=1e-9)
    again = bs.simulate(net, ids, brian2_device="cpp_standalone", **common)
    assert again.settings["build_dir"] == sa.settings["build_dir"]
    assert torch.equal(again.records["x_counts"], sa.records["x_counts"])


def test_build_lock_serialises_runs_of_one_structure(tmp_path):
    """Two runs of the same structure share a build directory; the second waits for the first."""
    import threading
    import time

    from bdh_spiking.backends.brian2.devices import BuildLock

    order = []
    first = BuildLock(tmp_path).acquire()

    def second():
        lock = BuildLock(tmp_path).acquire()
        order.append("second")
        lock.release()

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.3)
    order.append("first done")
    first.release()
    thread.join(5)
    assert order == ["first done", "second"]


@pytest.mark.slow
def test_psc_x_neurons_are_driven_by_their_layers_input():
    """Layer 0's x neurons see the embedding's LayerNorm x^0 (exact, from the stimulus table): their
    per-byte counts follow the dense form of rung psc on the dense model's own layer-0 x current,
    token_s * f(1 + g I). Before the fix they were driven by the layer's output x^1 (the E synapses
    read ``xo`` instead of ``xin``) and followed x^1's current instead."""
    import numpy as np

    from bdh_spiking.semantics import fold_weights
    from bdh_spiking.semantics.activation import Activation, replaced
    from bdh_spiking.semantics.lif import LifCurve

    model, net = tiny(seed=2, n_layer=2, gating="product")
    ids = ids_for(1, 3, seed=4)
    token_ms = 200.0
    out = bs.simulate(net, ids, backend="brian2", mode="biophysical", ladder="psc", token_ms=token_ms,
                      record=("counts",))
    seen = {}

    class Keep(Activation):
        def x(self, layer, current):
            seen[layer] = current.detach()
            return super().x(layer, current)

    with torch.no_grad(), replaced(model.double(), Keep()):
        model(ids)
    theta = fold_weights(net, torch.device("cpu"), torch.float64)["theta_x"]
    curve = LifCurve(20.0, 2.0, 200.0)
    expect = {}
    folded = (seen[0][0] / theta[0].unsqueeze(-2)).numpy()  # H, T, N
    expect[0] = token_ms / 1000.0 * curve.rate_hz(np.clip(folded, 0, None)).transpose(1, 0, 2)  # T, H, N
    got = out.records["x_counts"][0, :, 0].numpy()  # T, H, N
    # the first byte's count includes the onset (membranes and currents start at rest)
    err = np.abs(got[1:] - expect[0][1:])
    assert float(err.mean()) < 1.0 and float(np.corrcoef(got[1:].ravel(), expect[0][1:].ravel())[0, 1]) > 0.99


def _captured(monkeypatch):
    from bdh_spiking.backends.brian2 import psc

    seen = {}
    real_run = psc._run
    monkeypatch.setattr(psc, "_run", lambda objects, duration: (seen.update({o.name: o for o in objects}),
                                                                real_run(objects, duration)))
    return seen


def _check_event_read(seen: dict, out) -> None:
    """After an event-read run: P is the partner's S bit for bit, u = sum_n (cx S + sx P) a (rounding)."""
    import numpy as np

    x, attn, hebb = seen["bdh_psc_x"], seen["bdh_psc_attn"], seen["bdh_psc_hebb"]
    i, j = np.asarray(hebb.i[:]), np.asarray(hebb.j[:])
    S, P = np.asarray(hebb.S[:]), np.asarray(hebb.P[:])
    assert np.abs(S).sum() > 0 and out.records["x_counts"].sum() > 0
    partner = {(a, b): k for k, (a, b) in enumerate(zip(i ^ 1, j))}
    assert np.array_equal(P, S[[partner[(a, b)] for a, b in zip(i, j)]])
    a, cx, sx = (np.asarray(getattr(x, v)[:]) for v in ("a", "cx", "sx"))
    u = np.zeros(len(attn))
    np.add.at(u, j, (cx[i] * S + sx[i] * P) * a[i])
    got = np.asarray(attn.u[:])
    assert np.abs(got).max() > 0
    np.testing.assert_allclose(got, u, rtol=1e-9, atol=1e-12 * np.abs(u).max())


def test_event_plastic_read_keeps_u_equal_to_the_weighted_trains(monkeypatch):
    """plastic_read 'event' (the default): after a run of 3 bytes with writes, every readout unit's u
    equals sum_n (c_n S_nd + s'_n P_nd) a_n over its presynaptic x trains (what the summed read
    computes), P equals the pair partner's S bit for bit, and the row says which read ran; 'summed'
    reads through u = S q and gives another run."""
    import numpy as np

    import brian2 as b2

    from bdh_spiking.backends.brian2 import psc
    from bdh_spiking.semantics import fold_weights, oscillator_cos_sin

    _, net = tiny(seed=1, n_layer=2, gating="product")
    ids = ids_for(1, 3, seed=1)
    seen = _captured(monkeypatch)
    phase = []
    real_monitors = psc.PscNetwork._monitors

    def monitors(self, g):  # also x's phase in effect, at the end of every fine step (event read)
        if "cx" not in g["x"].variables:
            return real_monitors(self, g)
        phase.append(b2.StateMonitor(g["x"], ["cx", "sx"], record=True, when="end", name="test_phase"))
        return real_monitors(self, g) + phase[-1:]

    monkeypatch.setattr(psc.PscNetwork, "_monitors", monitors)
    common = dict(backend="brian2", mode="biophysical", ladder="psc", token_ms=40, record=("counts", "state"))
    out = bs.simulate(net, ids, **common)
    assert out.settings["plastic_read"] == "event"
    # the phase switches at each byte's write step (its last step) to the next byte's (the last byte's stays)
    freqs = fold_weights(net, torch.device("cpu"), torch.float64)["freqs"]
    cos, sin = (v.double().numpy() for v in oscillator_cos_sin(freqs, torch.arange(3)))
    steps = np.arange(phase[0].cx.shape[1])
    byte = np.minimum((steps + 1) // 400, 2)
    nn = np.asarray(seen["bdh_psc_x"].nn[:])
    sg = np.asarray(seen["bdh_psc_x"].sg[:])[:, None]
    assert np.array_equal(phase[0].cx[:], cos[byte][:, nn].T)
    assert np.array_equal(phase[0].sx[:], -sg * sin[byte][:, nn ^ 1].T)
    _check_event_read(seen, out)
    summed = bs.simulate(net, ids, plastic_read="summed", **common)
    assert summed.settings["plastic_read"] == "summed" and not torch.equal(summed.logits, out.logits)
    assert "bdh_psc_attn_decay" not in {o.name for o in seen["bdh_psc_attn"].contained_objects}
    with pytest.raises(ConfigError, match="plastic_read"):
        bs.simulate(net, ids, plastic_read="dense", **common)


@pytest.mark.parametrize("local_payload", ["cos", pytest.param("none", marks=pytest.mark.slow)])
def test_event_plastic_read_under_every_rung_above_psc(monkeypatch, local_payload):
    """The event read on top of dale, onoff (the write through the payload pair), local-plasticity
    (own-phase or no payload weight, bounded write, continuous decay of S, P and u) and
    divisive-norm: the same invariants as at psc after 3 bytes."""
    import numpy as np

    _, net = tiny(seed=1, n_layer=2, gating="product")
    seen = _captured(monkeypatch)
    out = bs.simulate(net, ids_for(1, 3, seed=1), backend="brian2", mode="biophysical", ladder="divisive-norm",
                      token_ms=40, record=("counts",), local_payload=local_payload, tau_decay_ms=200.0)
    assert out.settings["plastic_read"] == "event" and torch.isfinite(out.logits).all()
    _check_event_read(seen, out)
    assert not np.asarray(seen["bdh_psc_x"].sx[:]).any()  # no partner term in the local payload
