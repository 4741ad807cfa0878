"""bdh-convert end to end, through the installed entry point in a subprocess."""

import json

import pytest
import torch

from bdh_spiking.text import shipped_text_path


@pytest.fixture(scope="module")
def small_calibration(tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "calib.txt"
    path.write_bytes(shipped_text_path("calibration").read_bytes()[:1024])
    return path


def one_error_line(stderr):
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return len(lines) >= 1 and lines[-1].startswith("error:") and "Traceback" not in stderr


def test_convert_end_to_end(run_cli, tmp_path, small_calibration):
    out_json, net_path, plots = tmp_path / "r.json", tmp_path / "net.bdhsnn", tmp_path / "plots"
    code, stdout, stderr = run_cli("bdh-convert", "--calibration", small_calibration, "--max-tokens", "64",
                                   "--seq-len", "32", "--sweep-T", "2,4", "--json", out_json, "--save", net_path,
                                   "--plots", plots, "--generate", "5", "--prompt", "AB")
    assert code == 0, stderr
    assert "top1" in stdout and "reference" in stdout
    report = json.loads(out_json.read_text())
    assert report["meta"]["text"]["name"].startswith("shipped:heldout")
    assert report["meta"]["calibration"]["text"] == str(small_calibration)
    assert [(r["coding"], r["timesteps"]) for r in report["runs"]] == [("graded", 1), ("multispike", 2), ("multispike", 4)]
    assert report["runs"][0]["top1_agreement"] == 1.0
    assert (plots / "fidelity_vs_T.png").stat().st_size > 1000
    assert "sampled from the spiking network" in stdout
    sample = stdout.split("sampled from the spiking network")[1].splitlines()[1]
    assert sample.startswith("AB") and len(sample) >= 2
    # the saved network runs without the checkpoint and reproduces the same numbers
    out2 = tmp_path / "r2.json"
    code, stdout, stderr = run_cli("bdh-convert", "--load", net_path, "--max-tokens", "64", "--seq-len", "32",
                                   "-T", "4", "--no-graded", "--json", out2)
    assert code == 0, stderr
    again = json.loads(out2.read_text())["runs"][0]
    first = report["runs"][2]
    for key in ("top1_agreement", "ce_spiking", "ce_dense", "spikes_per_token", "max_abs_dlogit"):
        assert again[key] == first[key], key


@pytest.mark.parametrize("args,phrase", [
    (["--backend", "nest"], "valid backends are reference"),
    (["-T", "0"], "must be >= 1"),
    (["-T", "100000"], "absurdly large"),
    (["--text", "/nonexistent/file.txt"], "not found"),
    (["--sweep-T", "4,x"], "comma-separated integers"),
])
def test_convert_bad_input(run_main, tmp_path, small_calibration, args, phrase):
    out_json = tmp_path / "never.json"  # in-process; test_convert_bad_files runs the real entry point
    code, stdout, stderr = run_main("bdh-convert", "--calibration", small_calibration, "--max-tokens", "32",
                                   "--seq-len", "32", "--json", out_json, *args)
    assert code == 2
    assert one_error_line(stderr), stderr
    assert phrase in stderr
    assert not out_json.exists()


def test_convert_bad_files(run_cli, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.bdhsnn"
    corrupt.write_bytes(b"PK\x03\x04garbage")
    for args, phrase in [(["--calibration", empty], "empty"), (["--load", corrupt], "corrupt"),
                         (["--load", tmp_path / "absent.bdhsnn"], "not found"),
                         (["--device", "cuda"], "CUDA")]:
        if "cuda" in args and torch.cuda.is_available():
            continue
        out_json = tmp_path / "never.json"
        code, _, stderr = run_cli("bdh-convert", "--max-tokens", "32", "--json", out_json, *args)
        assert code == 2 and one_error_line(stderr) and phrase in stderr, stderr
        assert not out_json.exists()


def in_process_error(main, argv, capsys, *phrases):
    """main.run(argv) fails with exit 2 and one 'error:' line naming every phrase."""
    code = main.run(argv)
    stderr = capsys.readouterr().err
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, stderr
    assert "Traceback" not in stderr and len(lines) == 1 and lines[0].startswith("error: "), stderr
    for phrase in phrases:
        assert phrase in lines[0], stderr


@pytest.mark.parametrize("args,phrases", [
    (["--mode", "biophysical", "--backend", "brian2", "--hardware-fit", "loihi2"], ("--hardware-fit", "biophysical")),
    (["--mode", "biophysical", "--backend", "brian2", "--save-lava", "g"], ("--save-lava", "biophysical")),
    (["--mode", "fixed-point", "--generate", "5"], ("--generate", "fixed-point")),
])
def test_convert_refuses_flags_the_mode_would_drop(tmp_path, capsys, args, phrases):
    """Issue 14 (4): refused with one line before any work (the network file given does not exist)."""
    from bdh_spiking.cli import convert_main

    in_process_error(convert_main, ["--load", str(tmp_path / "absent.bdhsnn"), *args], capsys, *phrases)


@pytest.mark.parametrize("spec,phrase", [("", "no backend named"), ("all,reference", "'all' stands alone"),
                                         ("reference,reference", "named twice")])
def test_bad_backend_lists_are_one_line(capsys, spec, phrase):
    from bdh_spiking.cli import convert_main, energy_main

    for main in (convert_main, energy_main):
        in_process_error(main, ["--backend", spec], capsys, phrase)
