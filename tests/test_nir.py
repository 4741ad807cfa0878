"""NIR export (bdh_spiking.nir_export, bdh-convert --export-nir): the file, its weights, what it
declares lost, and what NIR's importers (snnTorch, Norse) make of it. Tiny random models only."""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest
import torch

import bdh_spiking as bs
from bdh_spiking.errors import BackendUnavailable
from bdh_spiking.semantics import fold_weights

from conftest import make_model

torch.set_num_threads(1)
warnings.filterwarnings("ignore", category=FutureWarning)  # norse's torch.jit.script at import

T_EXPORT = 4
_NETS = {}


def _net(gating: str):
    if gating not in _NETS:
        gen = torch.Generator().manual_seed(7)
        calibration = bytes(torch.randint(0, 256, (512,), generator=gen).tolist())
        _NETS[gating] = bs.convert(make_model(seed=0), gating=gating, calibration=calibration)
    return _NETS[gating]


@pytest.fixture
def nir():
    return pytest.importorskip("nir")


def _export(tmp_path, gating):
    from bdh_spiking.nir_export import export_nir

    path = tmp_path / f"net_{gating}.nir"
    info = export_nir(_net(gating), path, timesteps=T_EXPORT)
    return path, info


@pytest.mark.parametrize("gating", ["gain", "product"])
def test_export_reads_back_with_folded_weights(nir, tmp_path, gating):
    net = _net(gating)
    path, info = _export(tmp_path, gating)
    assert path.is_file() and info["bytes"] == path.stat().st_size > 0
    g = nir.read(path)
    d = net.dims
    L, H, D, N, V = d.L, d.H, d.D, d.N, d.V
    w = {k: v.numpy() for k, v in fold_weights(net).items()}

    # node types: Linear projections and IF populations, nothing else but the Input/Output cuts
    types = {k: type(v).__name__ for k, v in g.nodes.items()}
    assert set(types.values()) == {"Input", "Output", "Linear", "IF"}
    assert sum(t == "IF" for t in types.values()) == 2 * L * H
    assert sum(t == "Linear" for t in types.values()) == 2 + 3 * L * H
    assert info["nodes"] == {t: sum(v == t for v in types.values()) for t in set(types.values())}
    edges = {tuple(e) for e in g.edges}

    # weights equal the folded weights exactly (float64, NIR's (out, in) convention)
    np.testing.assert_array_equal(g.nodes["embedding"].weight, w["embed"].T)
    np.testing.assert_array_equal(g.nodes["lm_head"].weight, w["lm_head"].T)
    assert g.nodes["embedding"].weight.shape == (D, V) and g.nodes["lm_head"].weight.shape == (V, D)
    for l in range(L):
        for h in range(H):
            p = f"l{l}_h{h}"
            assert g.nodes[f"{p}_E"].weight.dtype == np.float64
            np.testing.assert_array_equal(g.nodes[f"{p}_E"].weight, w["W_x"][l, h].T)
            np.testing.assert_array_equal(g.nodes[f"{p}_E_v"].weight, w["W_y"][l, h].T)
            dec = w["decoder"][h * N:(h + 1) * N]
            if gating == "gain":  # a y spike carries theta_y / T of gated activity
                dec = dec * (w["theta_y"][l, h][:, None] / T_EXPORT)
            np.testing.assert_array_equal(g.nodes[f"{p}_D"].weight, dec.T)
            for pop in ("x", "y"):
                node = g.nodes[f"{p}_{pop}"]
                assert type(node).__name__ == "IF"
                np.testing.assert_array_equal(node.r, np.ones(N))
                np.testing.assert_array_equal(node.v_threshold, np.ones(N))
                np.testing.assert_array_equal(node.v_reset, np.zeros(N))
            assert {(f"l{l}_residual", f"{p}_E"), (f"{p}_E", f"{p}_x"), (f"{p}_x", f"{p}_x_spikes"),
                    (f"{p}_attn", f"{p}_E_v"), (f"{p}_D", f"l{l}_decoder")} <= edges
            # no edge crosses an operation NIR cannot express
            assert (f"{p}_x", f"{p}_E_v") not in edges and (f"{p}_x_spikes", f"{p}_attn") not in edges
            if gating == "gain":  # Jy = a * z: the gate is cut out, y spikes drive the decoder
                assert (f"{p}_E_v", f"{p}_z") in edges and (f"{p}_E_v", f"{p}_y") not in edges
                assert {(f"{p}_y_current", f"{p}_y"), (f"{p}_y", f"{p}_D")} <= edges
            else:  # product gating: E_v drives y exactly, the product node is cut out
                assert {(f"{p}_E_v", f"{p}_y"), (f"{p}_y", f"{p}_y_spikes"), (f"{p}_gated", f"{p}_D")} <= edges


@pytest.mark.parametrize("gating", ["gain", "product"])
def test_metadata_lists_what_is_lost(nir, tmp_path, gating):
    import json

    path, info = _export(tmp_path, gating)
    meta = nir.read(path).metadata
    parts = [e["part"] for e in info["lost"]]
    for must in ("embedding_layernorm", "x_decoding", "oscillator_payload", "hebbian_synapses",
                 "attention_layernorm", "residual_and_layernorms", "reset_by_subtraction",
                 "initial_potential", "discrete_time", "multispike_and_graded_coding"):
        assert must in parts
    assert ("gain_gating" in parts) == (gating == "gain") and ("product_gating" in parts) == (gating == "product")
    assert json.loads(meta["lost_json"]) == info["lost"]
    assert sorted(meta["lost"]) == [f"{i:02d}_{p}" for i, p in enumerate(parts)]
    assert all(isinstance(v, str) and v for v in meta["lost"].values())
    assert meta["gating"] == gating and int(meta["timesteps_per_token"]) == T_EXPORT
    assert float(meta["v_init"]) == _net(gating).v_init
    np.testing.assert_array_equal(meta["freqs"], _net(gating).arrays["freqs"])
    from bdh_spiking.nir_export import format_lost

    text = format_lost(info["lost"])
    assert "hebbian_synapses" in text and "LayerNorm" in text and "subtraction" in text


def _e_subgraph(nir, path):
    from bdh_spiking.nir_export import subgraph

    return subgraph(nir.read(path), ["l0_residual", "l0_h0_E", "l0_h0_x", "l0_h0_x_spikes"])


def _first_step_check(spikes, net):
    """From v = 0, one step of current J fires where J > 1 (ties within float32 rounding excused)."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, net.dims.D, generator=gen, dtype=torch.float64)
    J = x @ fold_weights(net)["W_x"][0, 0]
    want = (J > 1).double()
    clear = (J - 1).abs() > 1e-4
    assert torch.equal(spikes(x.float()).double()[clear], want[clear])


def test_snntorch_imports_projection_and_population(nir, tmp_path):
    pytest.importorskip("snntorch")
    from snntorch.import_nir import import_from_nir  # snnTorch 1.0 does not re-export it at top level

    net = _net("product")
    path, _ = _export(tmp_path, "product")
    module = import_from_nir(_e_subgraph(nir, path))
    lin = dict(module.named_modules())["l0_h0_E"]
    assert torch.equal(lin.weight.data, torch.as_tensor(fold_weights(net)["W_x"][0, 0].T, dtype=torch.float32))
    # snnTorch maps NIR IF to snn.Leaky(beta=0.9): the first step from rest still fires where J > 1
    _first_step_check(lambda x: module(x)[0][0], net)


def test_norse_imports_projection_and_population(nir, tmp_path):
    norse_torch = pytest.importorskip("norse.torch")

    net = _net("product")
    path, _ = _export(tmp_path, "product")
    module = norse_torch.from_nir(_e_subgraph(nir, path))
    lin = dict(module.named_modules())["l0_h0_E"]
    assert torch.equal(lin.weight.data, torch.as_tensor(fold_weights(net)["W_x"][0, 0].T, dtype=torch.float32))
    _first_step_check(lambda x: module(x)[0], net)


def test_missing_nir_is_a_clear_error(tmp_path, monkeypatch):
    from bdh_spiking import nir_export

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nir" else real(name, *a))
    with pytest.raises(BackendUnavailable, match=r"pip install 'bdh-spiking\[nir\]'"):
        nir_export.export_nir(_net("gain"), tmp_path / "never.nir")
    assert not (tmp_path / "never.nir").exists()
    # the CLI fails with one line, before converting anything
    from bdh_spiking.cli import convert_main

    assert convert_main.run(["--export-nir", str(tmp_path / "never.nir"), "--max-tokens", "8"]) == 2


def test_cli_export_nir(nir, run_cli, tmp_path):
    from bdh_spiking.checkpoint import save_checkpoint

    ckpt, calib, out = tmp_path / "tiny.pt", tmp_path / "calib.txt", tmp_path / "out.nir"
    save_checkpoint(ckpt, make_model(seed=0))
    calib.write_bytes(bytes(range(256)) * 2)
    code, stdout, stderr = run_cli("bdh-convert", ckpt, "--calibration", calib, "--max-tokens", "16",
                                   "--seq-len", "16", "-T", "2", "--no-graded", "--export-nir", out)
    assert code == 0, stderr
    assert "top1" in stdout
    assert f"wrote NIR graph {out}" in stderr and "hebbian_synapses" in stderr and "not representable" in stderr
    g = nir.read(out)
    assert int(g.metadata["timesteps_per_token"]) == 2 and "l1_h1_x" in g.nodes
