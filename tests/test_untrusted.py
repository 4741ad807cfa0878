"""Issue 21, "nothing lost, nothing trusted": every bad input fails before the work with one
`error:` line (exit 2 on the CLIs, a BDHError in the API); files are distrusted; outputs are
atomic; no NaN in JSON; progress does not flood a log; --help shows defaults and an example.

The table test runs the real entry points in-process (``main.run``, what the console scripts
call) so that dozens of rows cost seconds, and counts tracebacks: a regression shows as a number."""

from __future__ import annotations

import io
import json
import struct
import time
import traceback
import zipfile

import numpy as np
import pytest
import torch

import bdh_spiking as bs
from bdh_spiking.checkpoint import load_checkpoint, save_checkpoint
from bdh_spiking.cli import convert_main, energy_main, study_main, train_main
from bdh_spiking.errors import BDHError
from bdh_spiking.network import SpikingNetwork

from bundle_edit import rewrite
from conftest import make_model, run_in_process

MAINS = {"bdh-train": train_main, "bdh-convert": convert_main, "bdh-energy": energy_main, "bdh-study": study_main}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny good files (a network, a checkpoint, a text) and a directory to spoil."""
    d = tmp_path_factory.mktemp("untrusted")
    model = make_model(n_layer=1, n_embd=16, n_head=2, mlp_internal_dim_multiplier=4)
    rng = np.random.default_rng(0)
    net = bs.convert(model, calibration=bytes(rng.integers(32, 127, 256, dtype=np.uint8)))
    net.save(d / "net.bdhsnn")
    save_checkpoint(d / "ckpt.pt", model, {"note": "tiny"})
    (d / "text.txt").write_bytes(b"the quick brown fox jumps over the lazy dog\n" * 4)
    (d / "one.txt").write_bytes(b"x")
    (d / "plain.txt").write_text("not a checkpoint\n")
    (d / "somedir").mkdir()
    (d / "busy").mkdir()
    (d / "busy" / "notes.txt").write_text("keep me\n")
    (d / "report").mkdir()
    (d / "report" / "report.md").write_text("# old report\n")
    return d


# -- spoiled network files -------------------------------------------------------------------


def npy_bytes(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def npy_header_only(shape, dtype="<f8") -> bytes:
    """An .npy header claiming ``shape`` followed by 8 bytes of data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue() + b"\0" * 8


def declare_size(path, member: str, size: int):
    """Patches the central directory so ``member`` declares ``size`` uncompressed bytes (nothing
    of that size is written: a loader that trusts the declaration would try to read it)."""
    raw = bytearray(path.read_bytes())
    name = member.encode()
    at = raw.find(b"PK\x01\x02")
    while at >= 0:
        n = struct.unpack_from("<H", raw, at + 28)[0]
        if raw[at + 46: at + 46 + n] == name:
            struct.pack_into("<I", raw, at + 24, size)
            path.write_bytes(bytes(raw))
            return path
        at = raw.find(b"PK\x01\x02", at + 4)
    raise AssertionError(f"{member} not in {path}")


def net_variants(files, d):
    good = files / "net.bdhsnn"
    theta = np.load(io.BytesIO(zipfile.ZipFile(good).read("arrays/theta_x.npy")))
    return {
        "version_string": rewrite(good, d / "v.bdhsnn", lambda m: m.update(format_version="1")),
        "array_name_traversal": rewrite(good, d / "t.bdhsnn",
                                        lambda m: m["arrays"].update({"../../../x": {"shape": [1], "dtype": "float64"}}),
                                        extra={"arrays/../../../x.npy": npy_bytes(np.zeros(1))}),
        "complex_thresholds": rewrite(good, d / "c.bdhsnn", lambda m: m["arrays"]["theta_x"].update(dtype="complex128"),
                                      replace={"arrays/theta_x.npy": npy_bytes(theta.astype(np.complex128))}),
        "bool_thresholds": rewrite(good, d / "b.bdhsnn", lambda m: m["arrays"]["theta_x"].update(dtype="bool"),
                                   replace={"arrays/theta_x.npy": npy_bytes(theta > 0)}),
        "npy_header_huge_shape": rewrite(good, d / "h.bdhsnn",
                                         replace={"arrays/decoder.npy": npy_header_only((10**6, 10**6))}),
        "declared_600MB_member": declare_size(rewrite(good, d / "z.bdhsnn"), "arrays/embed.npy", 600 << 20),
        "v_init_5": rewrite(good, d / "vi.bdhsnn", lambda m: m.update(v_init=5)),
        "v_init_nan": rewrite(good, d / "vn.bdhsnn", lambda m: m.update(v_init=float("nan"))),
        "config_type": rewrite(good, d / "ct.bdhsnn", lambda m: m["config"].update(n_layer="1")),
        "config_huge_dim": rewrite(good, d / "cd.bdhsnn", lambda m: m["config"].update(n_embd=10**9)),
        "manifest_list": rewrite(good, d / "ml.bdhsnn", lambda m: (m.clear(), m.update(format=[1]))),
    }


def stride_checkpoint(path):
    """An official-format state dict whose 'encoder' is a stride-0 view claiming 10^10 floats."""
    state = {k: torch.zeros(2) for k in ("encoder_v", "decoder", "lm_head", "embed.weight", "attn.freqs")}
    state["encoder"] = torch.zeros(1).as_strided((100000, 100000), (0, 0))
    torch.save(state, path)
    return path


# -- the table -------------------------------------------------------------------------------


def cli_rows(f, t):
    """(command, argv, phrase the error must contain)."""
    ckpt, net, text = str(f / "ckpt.pt"), str(f / "net.bdhsnn"), str(f / "text.txt")
    fast = ["--load", net, "--text", text, "--max-tokens", "64", "--seq-len", "16"]
    return [
        ("bdh-train", ["--text", text, "--out", str(f / "plain.txt")], "exists: pass --force"),
        ("bdh-train", ["--text", text, "--out", ckpt], "exists: pass --force"),
        ("bdh-train", ["--text", text, "--out", str(t / "x.pt"), "--time-limit", "-1"], "--time-limit"),
        ("bdh-train", ["--text", text, "--out", str(t / "x.pt"), "--lr", "0"], "--lr"),
        ("bdh-train", ["--text", text, "--out", str(t / "x.pt"), "--dropout", "1"], "--dropout"),
        ("bdh-train", ["--text", text, "--out", str(t / "x.pt"), "--warmup-steps", "-5"], "--warmup-steps"),
        ("bdh-train", ["--text", str(t / "absent.txt"), "--out", str(t / "x.pt")], "not found"),
        ("bdh-train", ["--text", str(f / "somedir"), "--out", str(t / "x.pt")], "is a directory"),
        ("bdh-train", ["--text", text, "--out", str(f / "somedir")], "expected a file name"),
        ("bdh-train", ["--text", text, "--out", "/proc/bdh-x.pt"], "not writable"),
        ("bdh-train", ["--text", text, "--out", ckpt, "--resume", "--force"], "choose one"),
        ("bdh-train", ["--strip", str(f / "net.bdhsnn"), "--out", str(t / "s.pt")], "--load"),
        ("bdh-convert", [*fast, "--json", str(f / "somedir")], "expected a file name"),
        ("bdh-convert", [*fast, "--json", "/proc/bdh-x/r.json"], "not writable"),
        ("bdh-convert", [*fast, "--save", str(f / "plain.txt" / "n.bdhsnn")], "is a file, not a directory"),
        ("bdh-convert", [*fast, "--plots", str(f / "plain.txt")], "is a file, not a directory"),
        ("bdh-convert", [*fast, "--export-nir", "/proc/bdh-x.h5"], "not writable"),
        ("bdh-convert", [*fast, "--save-lava", str(f / "busy")], "holds other files"),
        ("bdh-convert", [*fast, "--backend", ""], "no backend named"),
        ("bdh-convert", [*fast, "--backend", "all,reference"], "'all' stands alone"),
        ("bdh-convert", [*fast, "--seq-len", "1"], "--seq-len"),
        ("bdh-convert", ["--load", net, "--text", str(f / "one.txt")], "at least 2 bytes"),
        ("bdh-convert", ["--load", ckpt, "--text", text], "PyTorch checkpoint"),
        ("bdh-convert", [net, "--text", text], "--load"),
        ("bdh-convert", [*fast, "--quantile", "2"], "--quantile"),
        ("bdh-convert", [*fast, "--token-ms", "-5"], "--token-ms"),
        ("bdh-convert", [*fast, "--mode", "fixed-point", "--generate", "5"], "--generate"),
        ("bdh-convert", [*fast, "--mode", "biophysical", "--save-lava", str(t / "lv")], "--save-lava"),
        ("bdh-convert", [*fast, "-T", "0"], "-T/--timesteps"),
        ("bdh-convert", [*fast, "--mode", "biophysical", "--backend", "brian2", "--save", str(t / "n.bdhsnn")],
         "not available with --mode biophysical"),
        ("bdh-convert", [*fast, "--record", "spikes", "--backend", "brian2"], "--mode biophysical"),
        ("bdh-convert", [*fast, "--json", str(f / "plain.txt")], "exists: pass --force"),
        ("bdh-convert", [*fast, "--save", net], "exists: pass --force"),
        ("bdh-energy", [*fast, "--json", str(f / "plain.txt")], "exists: pass --force"),
        ("bdh-energy", [*fast, "--json", str(f / "somedir")], "expected a file name"),
        ("bdh-energy", [*fast, "--plots", str(f / "plain.txt")], "is a file, not a directory"),
        ("bdh-energy", [*fast, "--profile", "nosuchchip"], "nosuchchip"),
        ("bdh-study", ["--out", str(f / "plain.txt")], "is a file"),
        ("bdh-study", ["--out", str(f / "busy")], "not a bdh-study report"),
        ("bdh-study", ["--out", str(f / "report")], "pass --force"),
        ("bdh-study", ["--out", str(t / "st"), "--fdr", "1.5"], "--fdr"),
        ("bdh-study", ["--out", str(t / "st"), "--taus-ms", "0"], "decay time constants"),
        ("bdh-study", ["--out", str(t / "st"), "--text", str(t / "absent.txt")], "not found"),
        ("bdh-study", ["--out", str(t / "st"), "--bio-tokens", "-1"], "--bio-tokens"),
    ]


def api_rows(f, t):
    """(name, callable, phrase the BDHError must contain)."""
    from bdh_spiking.network import dense_model
    from bdh_spiking.report import compare

    net = SpikingNetwork.load(f / "net.bdhsnn")
    model = dense_model(net)
    ids = torch.arange(8)[None] + 60
    v = net_variants(f, t)
    rows = [
        ("compare_1_token", lambda: compare(model, net, ids[:, :1]), "at least 2 tokens"),
        ("compare_no_backend", lambda: compare(model, net, ids, backends=[]), "no backend named"),
        ("compare_float_ids", lambda: compare(model, net, ids.double()), "integers"),
        ("compare_no_timesteps", lambda: compare(model, net, ids, timesteps=[]), "at least one T"),
        ("convert_seq_len_0", lambda: bs.convert(model, calibration=b"abc" * 20, seq_len=0), "seq_len"),
        ("convert_design_T_0", lambda: bs.convert(model, calibration=b"abc" * 20, design_T=0), "design_T"),
        ("convert_v_init_str", lambda: bs.convert(model, calibration=b"abc" * 20, v_init="0.5"), "v_init"),
        ("convert_quantile_nan", lambda: bs.convert(model, calibration=b"abc" * 20, quantile=float("nan")), "quantile"),
        ("convert_float_calibration", lambda: bs.convert(model, calibration=torch.rand(64)), "integers"),
        ("convert_calibration_ids_300", lambda: bs.convert(model, calibration=torch.full((64,), 300)), "[0, 256)"),
        ("train_time_limit_-1", lambda: train_api(f, t, time_limit_s=-1.0), "time_limit_s"),
        ("train_lr_nan", lambda: train_api(f, t, lr=float("nan")), "lr"),
        ("simulate_chunk_-1", lambda: bs.simulate(net, ids, chunk=-1), "chunk"),
        ("checkpoint_stride_trick", lambda: load_checkpoint(stride_checkpoint(t / "stride.pt")), "stride trick"),
        ("checkpoint_is_network", lambda: load_checkpoint(f / "net.bdhsnn"), "--load"),
        ("checkpoint_is_text", lambda: load_checkpoint(f / "plain.txt"), "not a PyTorch checkpoint"),
    ]
    phrases = {"version_string": "invalid format version", "array_name_traversal": "unknown array name",
               "complex_thresholds": "expected floating point", "bool_thresholds": "expected floating point",
               "npy_header_huge_shape": "has shape (1000000, 1000000)", "declared_600MB_member": "stored in",
               "v_init_5": "v_init", "v_init_nan": "v_init", "config_type": "n_layer",
               "config_huge_dim": "n_embd", "manifest_list": "not a bdh-spiking network"}
    for name, path in v.items():
        rows.append((f"network_{name}", lambda p=path: SpikingNetwork.load(p), phrases[name]))
    return rows


def train_api(f, t, **bad):
    from bdh_spiking.train import TrainSettings, train

    return train(TrainSettings(text=str(f / "text.txt"), out=str(t / "api.pt"), **bad), log=lambda m: None)


def test_bad_inputs_table_has_no_tracebacks(files, tmp_path):
    failures, tracebacks, rows, slowest = [], 0, 0, (0.0, "")
    for command, argv, phrase in cli_rows(files, tmp_path):
        started = time.perf_counter()
        rc, _, err = run_in_process(MAINS[command], argv)
        took = time.perf_counter() - started
        slowest = max(slowest, (took, f"{command} {' '.join(argv)}"))
        rows += 1
        tracebacks += err.count("Traceback (most recent call last)")
        lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
        if rc != 2 or len(lines) != 1 or phrase not in lines[0]:
            failures.append((command, argv, rc, err[-400:]))
    for name, call, phrase in api_rows(files, tmp_path):
        rows += 1
        try:
            call()
            failures.append((name, "accepted"))
        except BDHError as exc:
            if phrase not in str(exc) or "\n" in str(exc):
                failures.append((name, str(exc)))
        except Exception:  # noqa: BLE001 - counted: a traceback is what this test measures
            tracebacks += 1
            failures.append((name, traceback.format_exc()[-400:]))
    print(f"{rows} bad inputs, {tracebacks} tracebacks, slowest CLI row {slowest[0]:.2f} s: {slowest[1]}")
    assert rows >= 55
    assert tracebacks == 0
    assert failures == [], "\n".join(map(str, failures))
    assert (files / "plain.txt").read_text() == "not a checkpoint\n"  # nothing clobbered
    assert (files / "busy" / "notes.txt").read_text() == "keep me\n"


# -- loaders: nothing allocated from a claim ------------------------------------------------


def test_quantized_network_params_schema(files, tmp_path):
    from bdh_spiking.semantics.quantize import quantize

    net = quantize(SpikingNetwork.load(files / "net.bdhsnn"))
    good = tmp_path / "q.bdhsnn"
    net.save(good)
    assert SpikingNetwork.load(good).quantization is not None
    bad = rewrite(good, tmp_path / "qb.bdhsnn",
                  lambda m: m["extra"]["quantization"]["params"].update(weight_bits="8"))
    with pytest.raises(BDHError, match="quantization param 'weight_bits'"):
        SpikingNetwork.load(bad)


def test_extra_members_are_never_read(files, tmp_path, monkeypatch):
    """A member the manifest does not list is ignored (and, declared huge, costs nothing)."""
    path = declare_size(rewrite(files / "net.bdhsnn", tmp_path / "x.bdhsnn", extra={"junk.bin": b"0" * 64}),
                        "junk.bin", 600 << 20)
    read = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, name, *a, **k: (read.append(getattr(name, "filename", name)),
                                                                              real_open(self, name, *a, **k))[1])
    net = SpikingNetwork.load(path)
    assert "junk.bin" not in read and net.dims.D == 16


# -- outputs: atomic, strict JSON -------------------------------------------------------------


def test_atomic_dir_keeps_old_state_on_failure_and_replaces_on_success(tmp_path):
    from bdh_spiking.fileio import atomic_dir

    out = tmp_path / "report"
    out.mkdir()
    (out / "report.md").write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "a.png").write_bytes(b"half")
            raise RuntimeError("a figure failed")
    assert sorted(p.name for p in out.iterdir()) == ["report.md"] and (out / "report.md").read_text() == "old\n"
    with atomic_dir(out) as tmp:
        (tmp / "report.md").write_text("new\n")
        (tmp / "a.png").write_bytes(b"png")
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "report.md"]
    assert (out / "report.md").read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no temporary left beside it


def test_plots_are_staged_and_nan_is_null_in_json(tmp_path):
    from argparse import Namespace

    from bdh_spiking.cli.common import write_outputs
    from bdh_spiking.report import Report

    class Failing(Report):
        def plot(self, out_dir):
            (out_dir / "first.png").write_bytes(b"png")
            raise RuntimeError("second plot failed")

    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "first.png").write_bytes(b"old")
    report = Failing(meta={"ce": float("nan"), "ok": 1.5}, runs=[{"kl": float("inf")}])
    with pytest.raises(RuntimeError):
        write_outputs(report, Namespace(json=str(tmp_path / "r.json"), plots=str(plots)))
    assert (plots / "first.png").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plots", "r.json"]
    doc = json.loads((tmp_path / "r.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    assert doc["meta"]["ce"] is None and doc["runs"][0]["kl"] is None and doc["meta"]["ok"] == 1.5
    assert doc["null_not_finite"]["fields"] == ["meta.ce (nan)", "runs[0].kl (inf)"]


def test_memory_figure_with_one_tau_is_linear_not_log(tmp_path):
    from bdh_spiking.study.figures import _Figures, _memory_curve

    figs = _Figures(tmp_path)
    nan = float("nan")
    rows = [{"tau_tokens": 10.0, "context_benefit": nan, "context_benefit_ci95": [nan, nan]}]
    _memory_curve(figs, {"experiment2": {"decay": rows, "baseline": "scrambled_context", "hold_time": {},
                                         "table": {"intact": {"context_benefit": 0.1, "context_benefit_ci95": [0, 0.2]}}}})
    assert figs.files == ["memory_vs_tau_tokens.png"]
    assert all((tmp_path / n).stat().st_size > 0 for n in figs.files)


# -- through the console scripts: --force, progress in a pipe, --help ------------------------


def test_train_force_replaces_and_progress_does_not_flood_a_pipe(run_cli, files, tmp_path, make_corpus):
    corpus = make_corpus(n_bytes=3000)
    out = tmp_path / "model.pt"
    out.write_text("precious\n")
    tiny = ["--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--mult", "4", "--block-size", "16",
            "--batch-size", "2", "--eval-every", "50", "--eval-windows", "2", "--device", "cpu", "--threads", "1"]
    rc, _, err = run_cli("bdh-train", "--text", corpus, "--out", out, "--steps", "5", *tiny)
    assert rc == 2 and err.count("\n") == 1 and "--force" in err and out.read_text() == "precious\n"
    rc, _, err = run_cli("bdh-train", "--text", corpus, "--out", out, "--steps", "30", "--force", *tiny)
    assert rc == 0, err
    assert "\r" not in err  # stderr is a pipe: whole lines, no redraws
    assert len(err) < 4000, len(err)
    assert load_checkpoint(out)[1]["meta"]["steps"] == 30


@pytest.mark.parametrize("command", sorted(MAINS))
def test_help_shows_defaults_and_an_example(command):
    from bdh_spiking import cli

    parser = getattr(cli, f"{command.split('-')[1]}_parser")()
    text = parser.format_help()
    assert "example:" in text and f"  {command} " in text.split("example:")[1]
    assert "(default:" in text or "default" in text
    if command == "bdh-convert":
        assert "(default: 8)" in text and "(default: reference)" in text  # -T and --backend


def test_convert_replaces_an_existing_json_only_with_force(files, tmp_path):
    out = tmp_path / "r.json"
    out.write_text("old\n")
    argv = ["--load", str(files / "net.bdhsnn"), "--text", str(files / "text.txt"), "--max-tokens", "32",
            "--seq-len", "16", "--no-graded", "--json", str(out)]
    rc, _, err = run_in_process(MAINS["bdh-convert"], argv)
    assert rc == 2 and "exists: pass --force" in err and out.read_text() == "old\n"
    rc, _, err = run_in_process(MAINS["bdh-convert"], [*argv, "--force"])
    assert rc == 0, err[-400:]
    assert json.loads(out.read_text())["runs"]
