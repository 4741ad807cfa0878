"""Constraint fine-tuning (issue 15, ``bdh-train --constraints RUNG``): the dense form of a ladder
rung is the rung's own curve (semantics/lif.py numerics), its gradients are straight-through and
finite (psc: the curve's slope, floored), the lif decoding is capped where counts cannot resolve
the curve, its meta round-trips, a tiny fine-tuning run converts to a network whose counts the dense
form predicts, and bad input is refused before any work."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import bdh_spiking as bs
from bdh_spiking.checkpoint import load_checkpoint, save_checkpoint
from bdh_spiking.constraint_training import from_meta, to_meta
from bdh_spiking.errors import ConfigError
from bdh_spiking.semantics.activation import Activation, replaced
from bdh_spiking.semantics.constraints import (DENSE_FORMS, PSC_NEURON, RungActivation, RungNeuron, check_rung,
                                               windows_ms)
from bdh_spiking.semantics.lif import LifCurve, lif_count, lif_drive_for_rate
from conftest import make_model

PARAMS = {"tau_m_ms": 20.0, "t_ref_ms": 2.0, "max_rate_hz": 200.0, "v_start": 0.5, "token_ms": 100.0,
          "dt_ms": 0.1, "schedule": "pipelined", "tau_syn_ms": 5.0}
# what the dense forms of local-plasticity and divisive-norm read besides (the shipped defaults)
FORM_PARAMS = dict(PARAMS, w_max=4.0, tau_decay_ms=10000.0, local_payload="cos", norm_sigma=0.1, subtract_mean=False)


class Recorder(Activation):
    """ReLU, keeping every pre-activation current it sees."""

    def __init__(self, inner: Activation | None = None):
        self.inner, self.seen = inner or Activation(), {}

    def x(self, layer, current):
        self.seen[("x", layer)] = current.detach().clone()
        return self.inner.x(layer, current)

    def y(self, layer, current):
        self.seen[("y", layer)] = current.detach().clone()
        return self.inner.y(layer, current)


def test_lif_count_closed_form_matches_a_stepped_neuron():
    """Counts of LIF neurons integrated exactly step by step (dt 10 us) from v_start over 95 ms (every
    spike time of these drives lies at least 1 ms from the window's end: no step-size ties)."""
    tau, t_ref, v0, window, dt = 20.0, 2.0, 0.5, 95.0, 0.01
    mu = np.array([0.8, 1.0, 1.004, 1.02, 1.3, 2.0, 4.0, 9.0])
    v, refr, spikes = np.full(mu.shape, v0), np.zeros(mu.shape), np.zeros(mu.shape)
    decay = math.exp(-dt / tau)
    for _ in range(int(round(window / dt))):
        free = refr <= 0
        v = np.where(free, mu + (v - mu) * decay, v)
        refr -= dt
        fired = v > 1.0
        spikes += fired
        v[fired], refr[fired] = 0.0, t_ref
    closed = lif_count(mu, window, tau, t_ref, v0)
    assert closed.tolist() == spikes.tolist()
    assert closed[:2].tolist() == [0.0, 0.0] and closed[-1] > closed[-2] > 0
    # torch and numpy agree
    assert lif_count(torch.tensor(mu), window, tau, t_ref, v0).tolist() == closed.tolist()


def test_constrained_forward_is_the_rung_curve_on_the_pre_activations():
    """The model's x and y outputs under the rung's activation equal theta * decode(count(drive(I)))
    recomputed in numpy from semantics/lif.py; straight-through gradients, finite."""
    model = make_model(seed=3, std=0.3).double()
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    L, H, N = model.config.n_layer, model.config.n_head, model.config.n_neurons
    gen = torch.Generator().manual_seed(1)
    theta_x = torch.rand(L, H, N, generator=gen, dtype=torch.float64) * 2 + 0.5
    theta_y = torch.rand(L, H, N, generator=gen, dtype=torch.float64) * 2 + 0.5
    w = windows_ms(PARAMS, L)
    for rung in DENSE_FORMS:
        act = RungActivation(RungNeuron.from_params(rung, PARAMS, L), theta_x, theta_y)
        rec = Recorder(act)
        outputs = {}
        orig_x, orig_y = act.x, act.y
        act.x = lambda l, c: outputs.setdefault(("x", l), orig_x(l, c))
        act.y = lambda l, c: outputs.setdefault(("y", l), orig_y(l, c))
        with replaced(model, rec):
            model(ids)
        curve = LifCurve(PARAMS["tau_m_ms"], PARAMS["t_ref_ms"], PARAMS["max_rate_hz"])
        for (pop, layer), current in rec.seen.items():
            theta = (theta_x if pop == "x" else theta_y)[layer].unsqueeze(-2).numpy()
            folded = current.numpy() / theta
            if rung == "lif":
                mu = np.where(folded > 0, 1.0 + curve.gain * folded, 0.0)
            else:
                mu = np.where(folded > 0, lif_drive_for_rate(200.0 * np.clip(folded, 0, 1), 20.0, 2.0), 0.0)
            count = lif_count(mu, w[f"{pop}_eff"], 20.0, 2.0, 0.5)
            rate = count / (w[f"{pop}_eff"] / 1000.0)
            decoded = curve.current(rate, w[f"{pop}_eff"]) if rung == "lif" else rate / 200.0
            if rung in PSC_NEURON:  # the stationary rate of the lif curve, read linearly (no count)
                decoded = curve.rate_hz(np.clip(folded, 0, None)) / 200.0
            got = outputs[(pop, layer)].detach().numpy()
            np.testing.assert_allclose(got, theta * decoded, rtol=1e-12, atol=1e-15)
            assert (got[folded <= 0] == 0).all() and (got > 0).any()
            if rung == "rate-linearized":  # clipped at the top rate: every current above 1 decodes alike
                top = np.broadcast_to(theta, folded.shape)[folded > 1]
                assert (folded > 1).any() and np.allclose(got[folded > 1] / top, got[folded > 1][0] / top[0])
                assert (got / np.broadcast_to(theta, folded.shape) <= got[folded > 1][0] / top[0] + 1e-12).all()
        if rung == "psc":  # no quantization: the curve itself, checked above
            continue
        # the rung's quantization resolves small activations and stays near ReLU where it represents
        got = torch.cat([o.flatten() for o in outputs.values()])
        relu = torch.cat([torch.relu(rec.seen[k]).flatten() for k in outputs])
        inside = relu < torch.cat([(theta_x if k[0] == "x" else theta_y)[k[1]].unsqueeze(-2).expand_as(rec.seen[k])
                                   .flatten() for k in outputs])
        assert float(((got - relu).detach()[inside]).abs().max()) < 0.2 * float(relu[inside].max())


def test_straight_through_gradients_are_finite():
    theta = torch.ones(1, 1, 3, dtype=torch.float64)
    current = torch.tensor([-0.5, 0.3, 2.0], dtype=torch.float64).view(1, 1, 1, 3)
    for rung, expect in (("lif", [0.0, 1.0, 1.0]), ("rate-linearized", [0.0, 1.0, 0.0])):
        act = RungActivation(RungNeuron.from_params(rung, PARAMS, 1), theta, theta)
        c = current.clone().requires_grad_()
        act.x(0, c).sum().backward()
        assert c.grad.view(-1).tolist() == expect
    # a current so large that the count exceeds W_eff / t_ref: decoded in float64 as the network's
    # decoder does, to the cap (finite), never inf/nan in a float32 forward
    one = torch.ones(1, 1, 2)
    act = RungActivation(RungNeuron.from_params("lif", PARAMS, 1), one, one)
    big = act.x(0, torch.tensor([1e4, 50.0], dtype=torch.float32).view(1, 1, 1, 2))
    cap = act.neuron.curve.current_cap(act.neuron.windows["x_eff"])
    assert torch.isfinite(big).all() and big.dtype == torch.float32 and float(big.max()) == pytest.approx(cap, rel=1e-5)
    model = make_model(seed=5, std=0.3)
    L, H, N = model.config.n_layer, model.config.n_head, model.config.n_neurons
    theta = torch.full((L, H, N), 0.5, dtype=torch.float64)
    act = RungActivation(RungNeuron.from_params("lif", PARAMS, L), theta, theta)
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(2))
    with replaced(model, act):
        _, loss = model(ids[:, :-1], ids[:, 1:])
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_psc_dense_form_is_the_curve_read_linearly_with_its_floored_slope():
    """psc: theta * f(1 + g I) / r_max, 0 at I <= 0; gradient the curve's slope at max(I, I_1), I_1
    the current of one spike per byte (the true slope is infinite at 0+); windows are the byte."""
    neuron = RungNeuron.from_params("psc", PARAMS, 1)
    assert neuron.windows == {k: 100.0 for k in ("x", "y", "x_eff", "y_eff")}
    curve = neuron.curve
    floor = neuron.slope_floor("x")
    assert float(curve.rate_hz(floor)) == pytest.approx(10.0, rel=1e-9) and 1e-3 < floor < 2e-3
    theta = torch.full((1, 1, 6), 2.0, dtype=torch.float64)
    act = RungActivation(neuron, theta, theta)
    folded = torch.tensor([-0.5, 0.0, 1e-4, 0.3, 1.0, 2.0], dtype=torch.float64)
    c = (2.0 * folded).view(1, 1, 1, 6).requires_grad_()
    out = act.y(0, c)
    want = 2.0 * np.where(folded > 0, curve.rate_hz(np.clip(folded.numpy(), 0, None)) / 200.0, 0.0)
    np.testing.assert_allclose(out.detach().view(-1).numpy(), want, rtol=1e-12)
    assert float(out.detach().view(-1)[4]) == pytest.approx(2.0, rel=1e-9)  # I = 1 fires at r_max: the activation theta
    out.sum().backward()
    grad = c.grad.view(-1).numpy()
    h = 1e-6
    for k, i in ((3, 0.3), (4, 1.0), (5, 2.0)):  # the curve's own slope above the floor (finite differences)
        fd = (curve.rate_hz(i + h) - curve.rate_hz(i - h)) / (2 * h) / 200.0
        assert grad[k] == pytest.approx(fd, rel=1e-6)
    assert grad[0] == grad[1] == 0.0
    assert grad[2] == pytest.approx(float(curve.rate_slope_hz(floor)) / 200.0, rel=1e-12) and np.isfinite(grad).all()
    assert grad[2] > grad[3] > grad[4] > grad[5] > 0  # concave


def test_lif_decoding_is_capped_where_counts_cannot_resolve_the_curve():
    """A count within one spike of the rate limit 1/t_ref decodes to current_cap (about 75 at
    W_eff 95 ms), not to the diverging inverse (1.6e9 before); lower counts decode as before."""
    neuron = RungNeuron.from_params("lif", PARAMS, 1)
    w = neuron.windows["x_eff"]
    curve = neuron.curve
    cap = curve.current_cap(w)
    assert 50.0 < cap < 100.0
    assert curve.rate_cap_hz(w) == pytest.approx(500.0 - 1000.0 / w, rel=1e-12)
    big = neuron.decoded("x", torch.tensor([1e2, 1e3, 1e4, 1e6], dtype=torch.float64))
    assert torch.isfinite(big).all() and float(big.max()) == pytest.approx(cap, rel=1e-12)
    counts = np.arange(0, 51, dtype=float)  # every count a 100 ms window can hold
    rate = counts / (w / 1000.0)
    dec = curve.current(rate, w)
    below = rate <= curve.rate_cap_hz(w)
    exact = (lif_drive_for_rate(rate, 20.0, 2.0) - 1.0) / curve.gain
    np.testing.assert_array_equal(dec[below], exact[below])  # unchanged where the count resolves the curve
    assert (dec[~below] == cap).all() and np.all(np.diff(dec) >= 0)
    assert math.isinf(float(curve.current(500.0))) and float(curve.current(100.0)) == pytest.approx(
        float(curve.current(100.0, w)), rel=0)


def test_rungs_refused_by_name():
    assert check_rung("lif") == "lif"
    assert check_rung("psc") == "psc"
    assert check_rung("local-plasticity") == "local-plasticity" and check_rung("divisive-norm") == "divisive-norm"
    for rung, phrase in (("linear", "unknown rung"), ("dale", "nothing to train: its E/I split is exact"),
                         ("onoff", "ON/OFF pairs are exact")):
        with pytest.raises(ConfigError, match=f"{phrase}.*supported: rate-linearized, lif, psc, local-plasticity, "
                                              "divisive-norm"):
            check_rung(rung)


@pytest.mark.parametrize("rung", ["local-plasticity", "divisive-norm"])
def test_rungs_with_dense_forms_train_through_activation_and_forms(rung):
    """--constraints local-plasticity | divisive-norm: psc's neuron plus the rung's dense forms, both
    installed by the run's forward (and only inside it); the forms change the loss the run trains."""
    from bdh_spiking.semantics.activation import replaced as act_replaced
    from bdh_spiking.semantics.bio_forms import replaced_forms, rung_forms as forms_of
    from bdh_spiking.semantics.constraints import rung_forms
    from bdh_spiking.train import ConstraintRun

    assert rung_forms("psc", FORM_PARAMS) is None and rung_forms("onoff", FORM_PARAMS) is None
    model = make_model(seed=3, std=0.3).double().eval()
    L, H, N = model.config.n_layer, model.config.n_head, model.config.n_neurons
    theta = torch.full((L, H, N), 0.05, dtype=torch.float64)
    neuron = RungNeuron.from_params(rung, FORM_PARAMS, L)
    assert neuron.reads_rate and neuron.windows["x"] == FORM_PARAMS["token_ms"]
    run = ConstraintRun(RungActivation(neuron, theta, theta), 0, dict(FORM_PARAMS))
    assert run.forms == forms_of(rung, FORM_PARAMS)
    ids = torch.randint(0, 256, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        with run.replaced(model):
            assert model.forms is run.forms
            got = model(ids)[0]
        assert model.forms is None and model.activation is None
        with act_replaced(model, run.quantizer), replaced_forms(model, forms_of(rung, FORM_PARAMS)):
            want = model(ids)[0]
        with act_replaced(model, run.quantizer):
            activation_only = model(ids)[0]
    assert got.equal(want) and not torch.allclose(got, activation_only)


def test_meta_round_trips_through_a_checkpoint(tmp_path):
    model = make_model(seed=6, std=0.1)
    L, H, N = model.config.n_layer, model.config.n_head, model.config.n_neurons
    theta = torch.rand(L, H, N, dtype=torch.float64) + 0.1
    act = RungActivation(RungNeuron.from_params("lif", PARAMS, L), theta, theta * 2)
    save_checkpoint(tmp_path / "c.pt", model, {"constraints": to_meta(act, PARAMS, 7)})
    loaded, info = load_checkpoint(tmp_path / "c.pt")
    entry = info["meta"]["constraints"]
    assert loaded.constraints["rung"] == entry["rung"] == "lif" and entry["calibrated_at_step"] == 7
    back = from_meta(entry)
    assert back.neuron == act.neuron and back.theta["y"].equal(theta * 2)
    current = torch.randn(1, H, 4, N, dtype=torch.float64)
    assert back.x(0, current).equal(act.x(0, current))


def _bio_windows_of_executor(net, params):
    from bdh_spiking.backends.brian2.biophysical import BiophysicalExecutor
    from bdh_spiking.semantics import Plasticity, SimSettings

    ex = BiophysicalExecutor(net, SimSettings(timesteps=1, coding="rate", mode="biophysical"), Plasticity(), (),
                             False, "numpy", None, params, rung="lif")
    return ex


def test_tiny_cli_fine_tune_converts_to_the_network_it_trained_for(tmp_path, make_corpus, capsys):
    """bdh-train --init --constraints lif --steps 2; the checkpoint's thresholds are the conversion's;
    the executor's windows and gain are the dense form's; the brian2 network (rung lif, 2 bytes)
    fires the counts the dense form predicts (layer 0: exact inputs), up to the synaptic transient."""
    pytest.importorskip("brian2")
    from bdh_spiking.backends.brian2.params import load_params
    from bdh_spiking.cli.train import main

    base = tmp_path / "base.pt"
    save_checkpoint(base, make_model(seed=1, std=0.3, n_layer=1, n_embd=16))
    out = tmp_path / "lif.pt"
    code = main.run(["--init", str(base), "--text", str(make_corpus()), "--out", str(out), "--constraints", "lif",
                     "--steps", "2", "--batch-size", "2", "--block-size", "32", "--eval-every", "1",
                     "--eval-windows", "1", "--warmup-steps", "1"])
    assert code == 0, capsys.readouterr().err
    model, info = load_checkpoint(out)
    entry = info["meta"]["constraints"]
    assert entry["rung"] == "lif" and entry["calibrated_at_step"] == 1
    assert set(entry["val_loss"]) == {"before", "after"} and math.isfinite(entry["val_loss"]["after"]["constrained"])
    messages = []
    net = bs.convert(model, calibration=bytes(range(256)) * 4, design_max_spikes=1, log=messages.append)
    assert np.array_equal(net.arrays["theta_x"], entry["theta_x"].numpy())
    assert "constraint" in net.calibration["thresholds_from"] and any("constraint 'lif'" in m for m in messages)
    with pytest.raises(ConfigError, match="gating"):
        bs.convert(model, gating="gain", calibration=bytes(range(256)) * 4, design_max_spikes=1)
    other = bs.convert(model, calibration=bytes(range(256)) * 4, design_max_spikes=4)  # not the trained design
    assert not np.array_equal(other.arrays["theta_x"], entry["theta_x"].numpy())

    params = load_params(token_ms=60.0)
    act = from_meta(entry)
    neuron = RungNeuron.from_params("lif", params, 1)
    for schedule in ("pipelined", "sequential"):
        p = dict(params, schedule=schedule)
        ex = _bio_windows_of_executor(net, p)
        w = windows_ms(p, 1)
        assert ex.window_ms == {"x": w["x"], "y": w["y"]}
        assert ex.window_eff_ms == pytest.approx({"x": w["x_eff"], "y": w["y_eff"]}, rel=1e-12)
        assert ex.spec.namespace["lif_gain"] == pytest.approx(neuron.curve.gain, rel=1e-12)

    ids = torch.randint(0, 256, (1, 2), generator=torch.Generator().manual_seed(1))
    sim = bs.simulate(net, ids, backend="brian2", mode="biophysical", ladder="lif", token_ms=60.0,
                      record=("counts", "decoded"))
    rec = Recorder()
    with replaced(model.double(), rec):
        model(ids)
    folded = rec.seen[("x", 0)][0] / act.theta["x"][0].unsqueeze(-2)  # H, T, N
    dense = neuron.count("x", folded).permute(1, 0, 2)
    got = sim.records["x_counts"][0, :, 0]
    diff = (got - dense).abs()
    assert float((diff == 0).float().mean()) > 0.7 and float((diff <= 1).float().mean()) > 0.97
    decoded_dense = (act.theta["x"][0].unsqueeze(-2) * neuron.decoded("x", folded)).permute(1, 0, 2)
    relu = torch.relu(rec.seen[("x", 0)][0]).permute(1, 0, 2)
    a_net = sim.records["a_hat"][0, :, 0]
    assert float((a_net - decoded_dense).abs().mean()) < float((a_net - relu).abs().mean())


def test_tiny_cli_fine_tune_under_divisive_norm_records_its_forms_cost(tmp_path, make_corpus, capsys):
    """bdh-train --init --constraints divisive-norm --steps 2: the checkpoint records the rung and the
    parameters its forms read, and the validation loss under the constraint (psc's neuron plus the
    local plastic state and divisive normalisation) before and after, apart from the plain one."""
    from bdh_spiking.cli.train import main

    base = tmp_path / "base.pt"
    save_checkpoint(base, make_model(seed=1, std=0.3, n_layer=1, n_embd=16))
    out = tmp_path / "dn.pt"
    code = main.run(["--init", str(base), "--text", str(make_corpus()), "--out", str(out), "--constraints",
                     "divisive-norm", "--steps", "2", "--batch-size", "2", "--block-size", "32", "--eval-every", "1",
                     "--eval-windows", "1", "--warmup-steps", "1"])
    assert code == 0, capsys.readouterr().err
    entry = load_checkpoint(out)[1]["meta"]["constraints"]
    assert entry["rung"] == "divisive-norm" and entry["neuron"]["rung"] == "divisive-norm"
    assert entry["biophysical"]["norm_sigma"] > 0 and "tau_decay_ms" in entry["biophysical"]
    for when in ("before", "after"):
        v = entry["val_loss"][when]
        assert math.isfinite(v["constrained"]) and v["constrained"] != v["plain"]


@pytest.mark.parametrize("extra, phrase", [
    (["--constraints", "linear"], "unknown rung 'linear' (supported: rate-linearized, lif, psc, local-plasticity, "
                                  "divisive-norm)"),
    (["--constraints", "dale"], "rung 'dale' has nothing to train"),
    (["--constraints", "onoff"], "rung 'onoff' has nothing to train"),
    (["--constraints", "lif", "--no-init"], "give it with --init CKPT"),
    (["--constraints", "lif", "--spiking-aware", "4"], "choose one"),
    (["--bio-params", "x.toml"], "--bio-params is read with --constraints only"),
    (["--constraints", "lif", "--bio-params", "missing.toml"], "missing.toml"),
])
def test_cli_bad_input_refused_before_any_work(tmp_path, make_corpus, capsys, extra, phrase):
    from bdh_spiking.cli.train import main

    base = tmp_path / "base.pt"
    save_checkpoint(base, make_model(seed=1, std=0.1))
    out = tmp_path / "never.pt"
    init = [] if "--no-init" in extra else ["--init", str(base)]
    args = ["--text", str(make_corpus()), "--out", str(out), *init, *[a for a in extra if a != "--no-init"]]
    assert main.run(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and phrase in err and "\n" not in err
    assert not out.exists()
