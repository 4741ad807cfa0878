"""Distributed evaluation (bdh_spiking.distributed): sequences split across torchrun ranks give the
report of one process. Unit tests in-process; the torchrun runs (2 CPU ranks, gloo) are slow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import bdh_spiking as bs
from bdh_spiking import distributed
from bdh_spiking.errors import ConfigError
from bdh_spiking.semantics import SimSettings

from conftest import make_model

ROOT = Path(__file__).resolve().parents[1]
VOLATILE = {"wall_s", "tokens_per_s", "world_size", "host"}


def _tiny_net(seed=0):
    gen = torch.Generator().manual_seed(1)
    model = make_model(seed=seed, std=0.3, n_embd=16, mlp_internal_dim_multiplier=8)
    return bs.convert(model, calibration=bytes(torch.randint(0, 256, (1024,), generator=gen).tolist()))


def test_shard_rows_cover_every_sequence_once():
    for n, world in ((5, 2), (4, 4), (7, 3), (64, 8)):
        rows = [distributed.shard_rows(n, world, r) for r in range(world)]
        assert [i for s in rows for i in range(n)[s]] == list(range(n))
    with pytest.raises(ConfigError, match="3 ranks but only 2 sequences"):
        distributed.shard_rows(2, 3, 0)


def test_merged_shards_equal_one_run():
    """The merge of row shards is the whole run: logits, statistics, records and events equal."""
    net = _tiny_net()
    ids = torch.randint(0, 256, (3, 12), generator=torch.Generator().manual_seed(2))
    kw = dict(backend="snntorch", timesteps=3, coding="multispike", max_spikes=2, record=("counts", "state"))
    whole = bs.simulate(net, ids, **kw)
    parts = [bs.simulate(net, ids[distributed.shard_rows(3, 2, r)], **kw) for r in range(2)]
    merged = distributed.merge_results(parts, net, SimSettings(timesteps=3, coding="multispike", max_spikes=2))
    assert torch.equal(merged.logits, whole.logits)
    for key in whole.stats:
        assert torch.equal(merged.stats[key], whole.stats[key])
    for key in whole.records:
        assert torch.equal(merged.records[key], whole.records[key]), key
    assert merged.events == whole.events and merged.settings["world_size"] == 2
    assert whole.events["spikes"] > 0


def test_nccl_without_cuda_is_one_line(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("BDH_SPIKING_DIST_BACKEND", "nccl")
    with pytest.raises(ConfigError, match="NCCL process group needs CUDA"):
        distributed.setup("cpu")


def test_one_process_is_untouched():
    assert distributed.world_size() == 1 and distributed.is_main()
    net = _tiny_net()
    ids = torch.randint(0, 256, (1, 6), generator=torch.Generator().manual_seed(3))
    a = distributed.simulate_sharded(net, ids, backend="reference", timesteps=2)
    assert "world_size" not in a.settings
    assert torch.equal(a.logits, bs.simulate(net, ids, backend="reference", timesteps=2).logits)


# -- through torchrun: 2 CPU ranks (gloo) ----------------------------------------------------------
def _torchrun(args, tmp_path, nproc=2):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


@pytest.mark.slow
def test_torchrun_two_ranks_give_the_one_process_report(tmp_path):
    net_file = tmp_path / "tiny.bdhsnn"
    _tiny_net().save(net_file)
    cli = str(Path(sys.executable).parent / "bdh-convert")
    common = ["--load", str(net_file), "--backend", "reference,snntorch,norse", "--max-tokens", "80",
              "--seq-len", "16", "-T", "3", "--coding", "rate"]
    one = subprocess.run([cli, *common, "--json", str(tmp_path / "one.json")], cwd=tmp_path, capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=600)
    assert one.returncode == 0, one.stderr
    two = _torchrun([cli, *common, "--json", str(tmp_path / "two.json")], tmp_path)
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = json.loads((tmp_path / "one.json").read_text()), json.loads((tmp_path / "two.json").read_text())
    assert a["meta"]["world_size"] == 1 and b["meta"]["world_size"] == 2
    assert _strip(a) == _strip(b)  # identical counts, CE, top-1, every statistic
    assert two.stdout.count("spike counts, backend against backend") == 1  # rank 0 alone prints
    # bdh-energy the same way
    energy = str(Path(sys.executable).parent / "bdh-energy")
    e_common = ["--load", str(net_file), "--backend", "snntorch", "--max-tokens", "48", "--seq-len", "16", "-T", "2",
                "--profile", "loihi2"]
    e1 = subprocess.run([energy, *e_common, "--json", str(tmp_path / "e1.json")], cwd=tmp_path, capture_output=True,
                        text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=600)
    e2 = _torchrun([energy, *e_common, "--json", str(tmp_path / "e2.json")], tmp_path)
    assert e1.returncode == 0 and e2.returncode == 0, (e1.stderr[-1000:], e2.stderr[-1000:])
    ea, eb = (json.loads((tmp_path / f).read_text()) for f in ("e1.json", "e2.json"))
    assert _strip(ea) == _strip(eb)


@pytest.mark.slow
def test_torchrun_bad_input_every_rank_fails_with_one_line(tmp_path):
    net_file = tmp_path / "tiny.bdhsnn"
    _tiny_net().save(net_file)
    cli = str(Path(sys.executable).parent / "bdh-convert")
    # more ranks than sequences: one 16-byte sequence, two ranks
    out = _torchrun([cli, "--load", str(net_file), "--max-tokens", "16", "--seq-len", "16", "-T", "2"], tmp_path)
    assert out.returncode != 0
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert lines == ["error: rank 0: 2 ranks but only 1 sequences to evaluate: use at most 1 processes "
                     "(torchrun --nproc_per_node) or more sequences"], out.stderr[-2000:]
    # a rank that fails: rank 1 asks for an impossible setting, every rank raises its error
    script = tmp_path / "fail.py"
    script.write_text(textwrap.dedent(f"""
        import sys, torch
        from bdh_spiking import SpikingNetwork, distributed
        net = SpikingNetwork.load({str(net_file)!r})
        distributed.setup("cpu")
        T = 0 if distributed.rank() == 1 else 2
        try:
            distributed.simulate_sharded(net, torch.zeros(4, 4, dtype=torch.int64), timesteps=T)
        except distributed.RankError as exc:
            print(f"rank {{distributed.rank()}} error: {{exc}}", flush=True)
            sys.exit(3)
    """))
    out = _torchrun([str(script)], tmp_path)
    assert out.returncode != 0
    assert out.stdout.count("error: rank 1: timesteps") == 2, out.stdout + out.stderr[-2000:]
