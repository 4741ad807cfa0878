"""Spiking-aware fine-tuning: the closed-form quantizer is the converted network's computation,
the trainer records its thresholds, and bdh-convert uses them."""

import copy

import numpy as np
import pytest
import torch

import bdh_spiking as bs
from bdh_spiking.checkpoint import load_checkpoint, save_checkpoint
from bdh_spiking.conversion import convert
from bdh_spiking.errors import ConfigError
from bdh_spiking.model import BDH, BDHConfig
from bdh_spiking.semantics import SimSettings, run_population
from bdh_spiking.semantics.activation import SpikingQuantizer, clipped_mass, replaced, spike_count, tie_distance
from bdh_spiking.spiking_aware import from_meta, to_meta
from bdh_spiking.train import TrainSettings, train


def tiny(seed=0, std=0.3):
    torch.manual_seed(seed)
    model = BDH(BDHConfig(n_layer=2, n_embd=32, n_head=2, mlp_internal_dim_multiplier=8, dropout=0.0)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=std)
    return model


def rand_ids(seed, n):
    return torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("coding,K", [("rate", 1), ("multispike", 2), ("multispike", 4)])
@pytest.mark.parametrize("T", [1, 2, 3, 4, 7, 16])
def test_closed_form_count_is_run_population(coding, K, T):
    current = torch.randn(20000, dtype=torch.float64, generator=torch.Generator().manual_seed(T)) * 2 * K
    current[:50] = torch.arange(50, dtype=torch.float64) / T  # exact multiples of 1/T (v0 + T J = k + 1/2)
    stepped, _ = run_population(current, SimSettings(timesteps=T, coding=coding, max_spikes=K), 0.5, margins=False)
    closed = spike_count(current, T, K, 0.5)
    differ = stepped != closed
    ties = tie_distance(current, T, K, 0.5) < 1e-9
    assert int((differ & ~ties).sum()) == 0
    assert int(closed.max()) == K * T  # the clip is exercised


def _quantized_logits(model, net, ids, T, K):
    dense = copy.deepcopy(model).double().eval()
    dense.attn.freqs = model.attn.freqs.to(torch.float32).clone()
    q = SpikingQuantizer(torch.from_numpy(net.arrays["theta_x"]), torch.from_numpy(net.arrays["theta_y"]), T, K,
                         net.v_init)
    ties = {"n": 0}

    class Counting(SpikingQuantizer):
        def x(self, layer, current):
            ties["n"] += int(q.ties("x", layer, current).sum())
            return q.x(layer, current)

        def y(self, layer, current):
            ties["n"] += int(q.ties("y", layer, current).sum())
            return q.y(layer, current)

    with torch.no_grad(), replaced(dense, Counting(q.theta["x"], q.theta["y"], T, K)):
        logits = dense(ids)[0]
    return logits, ties["n"]


@pytest.mark.parametrize("coding,T,K", [("multispike", 4, 4), ("multispike", 2, 2), ("rate", 8, 1),
                                        ("multispike", 3, 1)])
def test_quantized_dense_forward_equals_converted_network(coding, T, K):
    model = tiny(3)
    net = convert(model, gating="product", calibration=rand_ids(3, 1024), design_T=T, design_max_spikes=K)
    ids = rand_ids(4, 96).view(2, 48)
    spiking = bs.simulate(net, ids, timesteps=T, coding=coding, max_spikes=K).logits
    quantized, ties = _quantized_logits(model, net, ids, T, K)
    with torch.no_grad():
        plain = tiny(3).double()(ids)[0]
    assert ties == 0  # no near-threshold tie in this draw; with ties the logits may differ after them
    assert float((spiking - quantized).abs().max() / spiking.abs().max()) < 1e-12
    assert float((spiking - plain).abs().max() / spiking.abs().max()) > 1e-3  # quantization is not a no-op


def test_straight_through_gradient_inside_range_only():
    theta = torch.ones(1, 1, 3, dtype=torch.float64)
    q = SpikingQuantizer(theta, theta, timesteps=4, max_spikes=2)
    current = torch.tensor([-0.5, 0.7, 3.0], dtype=torch.float64).view(1, 1, 1, 3).requires_grad_()
    out = q.x(0, current)
    assert torch.allclose(out.detach().view(-1), torch.tensor([0.0, 0.75, 2.0], dtype=torch.float64))
    out.sum().backward()
    assert current.grad.view(-1).tolist() == [0.0, 1.0, 0.0]
    over, total = clipped_mass(current.detach(), theta, 2)
    assert over == pytest.approx(1.0) and total == pytest.approx(3.7)


def test_fine_tune_records_thresholds_and_convert_uses_them(tmp_path, make_corpus):
    corpus_file = make_corpus()
    base = tmp_path / "base.pt"
    save_checkpoint(base, tiny(1, std=0.1))
    out = tmp_path / "aware.pt"
    train(TrainSettings(text=str(corpus_file), out=str(out), steps=3, batch_size=2, block_size=32,
                        eval_every=2, eval_windows=1, warmup_steps=1, init=str(base), spiking_aware=3,
                        max_spikes=2), log=lambda m: None, progress=False)
    model, info = load_checkpoint(out)
    entry = info["meta"]["spiking_aware"]
    assert (entry["timesteps"], entry["max_spikes"], entry["gating"]) == (3, 2, "product")
    assert tuple(entry["theta_x"].shape) == (2, 2, 128) and entry["calibrated_at_step"] == 2
    messages = []
    net = convert(model, gating="product", calibration=rand_ids(0, 512), log=messages.append)
    assert np.array_equal(net.arrays["theta_x"], entry["theta_x"].numpy())
    assert np.array_equal(net.arrays["theta_y"], entry["theta_y"].numpy())
    assert "spiking-aware" in messages[0] and "spiking-aware" in net.calibration["thresholds_from"]
    # the converted network at the trained T is the checkpoint's quantized forward
    ids = rand_ids(9, 64).view(2, 32)
    spiking = bs.simulate(net, ids, timesteps=3, coding="multispike", max_spikes=2).logits
    quantized, ties = _quantized_logits(model, net, ids, 3, 2)
    assert ties == 0 and float((spiking - quantized).abs().max() / spiking.abs().max()) < 1e-12
    q = from_meta(entry)
    assert to_meta(q, 2)["theta_x"].equal(entry["theta_x"])
    with pytest.raises(ConfigError, match="fine-tuned spiking-aware"):
        convert(model, gating="gain", calibration=rand_ids(0, 512))


def test_out_of_range_activations_are_reported():
    model = tiny(2)
    net = convert(model, gating="product", calibration=rand_ids(2, 1024), statistic="max")
    ids = rand_ids(5, 64).view(2, 32)
    messages = []
    rep = bs.compare(model, net, ids, timesteps=[2], codings=["multispike"], max_spikes=1, include_graded=True,
                     log=messages.append)
    graded, spiking = rep.runs
    assert graded["clipped_fraction"] == 0.0
    assert 0.0 < spiking["clipped_fraction"] < 1.0  # thresholds at the calibration max, K=1: text beyond it
    assert any(m.startswith("warning:") and "clipped" in m for m in messages)
    assert "clipped %" in rep.table()
    # thresholds far above every activation: nothing clipped, no warning
    net.arrays["theta_x"] = net.arrays["theta_x"] * 1e3
    net.arrays["theta_y"] = net.arrays["theta_y"] * 1e3
    messages.clear()
    rep = bs.compare(model, net, ids, timesteps=[2], codings=["rate"], include_graded=False, log=messages.append)
    assert rep.runs[0]["clipped_fraction"] == 0.0 and not any(m.startswith("warning:") for m in messages)


def test_consistency_term_is_the_kl_to_the_plain_forward():
    from bdh_spiking.train import SpikingAware

    model = tiny(4)
    theta = torch.full((2, 2, 128), 0.5, dtype=torch.float64)
    aware = SpikingAware(SpikingQuantizer(theta, theta, timesteps=2, max_spikes=1), 0)
    ids = rand_ids(1, 33).view(1, 33)
    x, y = ids[:, :-1], ids[:, 1:]
    logits, plain_loss = aware.loss(model, x, y)
    _, with_kl = aware.loss(model, x, y, consistency=2.0)
    with torch.no_grad():
        p = torch.log_softmax(model(x)[0], -1)
    kl = float((p.exp() * (p - torch.log_softmax(logits.detach(), -1))).sum(-1).mean())
    assert kl > 0 and float((with_kl - plain_loss).detach()) == pytest.approx(2.0 * kl, rel=1e-5)
    assert model.activation is None  # the plain forward is restored after the quantized one
