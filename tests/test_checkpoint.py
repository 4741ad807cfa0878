"""Checkpoints: own-format round trip, official-format loading, and refusal of bad inputs."""

from __future__ import annotations

import os

import pytest
import torch

from bdh_spiking.checkpoint import (FORMAT, OFFICIAL_N_LAYER, load_checkpoint, load_model,
                                    save_checkpoint)
from bdh_spiking.errors import BDHError, CheckpointError
from bdh_spiking.model import BDH, BDHConfig

from conftest import make_model


def ids(length: int = 40, seed: int = 3) -> torch.Tensor:
    return torch.randint(256, (2, length), generator=torch.Generator().manual_seed(seed))


def logits(model: BDH, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)[0]


def official_state(model: BDH) -> dict:
    """An official-format state dict: a bare dict of tensors with the official key names."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def save_official(path, state: dict) -> str:
    torch.save(state, path)
    return str(path)


# -- own format ----------------------------------------------------------------------------
def test_own_format_round_trip_is_bit_exact(tmp_path, tiny_model):
    path = tmp_path / "own.pt"
    meta = {"val_loss": 1.25, "steps": 7, "history": [{"step": 7, "val": 1.25}]}
    save_checkpoint(path, tiny_model, meta=meta)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["version"] == 1
    assert raw["config"] == tiny_model.config.to_dict()
    assert raw["meta"] == meta
    assert "optimizer" not in raw and "trainer" not in raw

    messages = []
    loaded, info = load_checkpoint(path, log=messages.append)
    assert info["format"] == FORMAT
    assert info["meta"] == meta
    assert info["config"] == tiny_model.config.to_dict()
    assert len(info["sha256"]) == 64
    assert not loaded.training
    want = tiny_model.state_dict()
    got = loaded.state_dict()
    assert set(got) == set(want)
    for key in want:
        assert got[key].dtype == want[key].dtype, key
        assert torch.equal(got[key], want[key]), key
    x = ids()
    assert torch.equal(logits(loaded, x), logits(tiny_model, x))


def test_own_format_round_trip_float64_keeps_float32_freqs(tmp_path):
    model = make_model(seed=2).double()
    path = tmp_path / "own64.pt"
    save_checkpoint(path, model)
    loaded, _ = load_checkpoint(path)
    assert loaded.encoder.dtype == torch.float64
    assert loaded.attn.freqs.dtype == torch.float32
    assert torch.equal(loaded.attn.freqs.double(), model.attn.freqs)
    x = ids()
    assert torch.equal(logits(loaded, x), logits(model, x))


def test_own_format_with_training_state_loads_weights_only(tmp_path, tiny_model):
    path = tmp_path / "train.pt"
    opt = torch.optim.AdamW(tiny_model.parameters())
    tiny_model(ids())[0].sum().backward()
    opt.step()
    trainer = {"step": 1, "tokens": 80, "elapsed_s": 0.5, "generator": torch.Generator().get_state()}
    save_checkpoint(path, tiny_model, {"steps": 1}, opt.state_dict(), trainer)
    raw = torch.load(path, weights_only=True)
    assert raw["trainer"]["step"] == 1
    _, info = load_checkpoint(path)
    assert info["trainer"]["step"] == 1
    assert info["optimizer"]["state"]


def test_own_format_n_layer_override_is_logged(tmp_path, tiny_model):
    path = tmp_path / "own.pt"
    save_checkpoint(path, tiny_model)
    messages = []
    model = load_model(path, n_layer=1, log=messages.append)
    assert model.config.n_layer == 1
    assert any("n_layer=1" in m for m in messages)


# -- official format -----------------------------------------------------------------------
@pytest.mark.parametrize("prefix", ["", "_orig_mod."])
def test_official_state_dict_loads_with_identical_logits(tmp_path, tiny_model, prefix):
    state = {prefix + k: v for k, v in official_state(tiny_model).items()}
    path = save_official(tmp_path / "official.pt", state)
    messages = []
    loaded = load_model(path, n_layer=tiny_model.config.n_layer, log=messages.append)
    # dropout is stored in no tensor (and is inactive in eval mode); every other field is inferred
    got = {k: v for k, v in loaded.config.to_dict().items() if k != "dropout"}
    assert got == {k: v for k, v in tiny_model.config.to_dict().items() if k != "dropout"}
    assert not loaded.training
    assert loaded.attn.freqs.dtype == torch.float32
    x = ids()
    assert torch.equal(logits(loaded, x), logits(tiny_model, x))
    assert any("official" in m and "n_layer=2" in m and "given" in m for m in messages)


def test_official_state_dict_with_lm_gate(tmp_path, tiny_model):
    state = official_state(tiny_model)
    state["lm_gate"] = torch.randn(tiny_model.config.n_embd, 1)
    path = save_official(tmp_path / "gate.pt", {"_orig_mod." + k: v for k, v in state.items()})
    messages = []
    loaded = load_model(path, n_layer=2, log=messages.append)
    assert any("lm_gate" in m for m in messages)
    x = ids()
    assert torch.equal(logits(loaded, x), logits(tiny_model, x))


def test_official_without_n_layer_assumes_six(tmp_path, tiny_model):
    path = save_official(tmp_path / "official.pt", official_state(tiny_model))
    messages = []
    loaded, info = load_checkpoint(path, log=messages.append)
    assert OFFICIAL_N_LAYER == 6
    assert loaded.config.n_layer == 6
    assert info["format"] == "official" and info["config"]["n_layer"] == 6
    assert any("n_layer=6" in m and "assumed" in m for m in messages)


def test_official_float64_state_keeps_float32_freqs(tmp_path):
    model = make_model(seed=5).double()
    state = official_state(model)
    assert state["attn.freqs"].dtype == torch.float64
    path = save_official(tmp_path / "official64.pt", state)
    loaded = load_model(path, n_layer=2)
    assert loaded.encoder.dtype == torch.float64
    assert loaded.attn.freqs.dtype == torch.float32
    x = ids()
    assert torch.equal(logits(loaded, x), logits(model, x))


# -- refused inputs ------------------------------------------------------------------------
class Payload:
    """A harmless class: loading an instance of it needs arbitrary unpickling."""

    def __init__(self):
        self.value = 1


class CodeRunner:
    """Unpickling this calls os.makedirs(marker): a stand-in for arbitrary code execution."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def expect_error(path, phrase: str, **kwargs) -> str:
    with pytest.raises(CheckpointError) as excinfo:
        load_model(path, **kwargs)
    message = str(excinfo.value)
    assert phrase in message, message
    assert "\n" not in message  # one line, for the CLIs
    return message


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.pt", "not found")


def test_directory(tmp_path):
    expect_error(tmp_path, "directory")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    expect_error(path, "empty")


def test_text_file(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("these are not the weights you are looking for\n")
    expect_error(path, "not a PyTorch checkpoint")


def test_truncated_checkpoint(tmp_path, tiny_model):
    path = tmp_path / "cut.pt"
    save_checkpoint(path, tiny_model)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = expect_error(path, "truncated")
    assert "corrupt" in message


def test_pickle_of_arbitrary_object_is_refused(tmp_path):
    path = tmp_path / "object.pt"
    torch.save(Payload(), path)
    expect_error(path, "refused")
    path2 = tmp_path / "dict_with_object.pt"
    torch.save({"encoder": Payload()}, path2)
    expect_error(path2, "refused")


def test_pickle_that_would_execute_code_is_refused(tmp_path, tiny_model):
    marker = tmp_path / "code-was-executed"
    state = official_state(tiny_model)
    state["lm_gate"] = CodeRunner(str(marker))
    path = tmp_path / "evil.pt"
    torch.save(state, path)
    assert not marker.exists()
    message = expect_error(path, "refused", n_layer=2)
    assert "execute code" in message
    assert not marker.exists()


def test_non_dict_checkpoint(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    expect_error(path, "not a BDH checkpoint")


def test_missing_key(tmp_path, tiny_model):
    state = official_state(tiny_model)
    del state["decoder"]
    message = expect_error(save_official(tmp_path / "m.pt", state), "missing 'decoder'", n_layer=2)
    assert "unexpected" not in message


def test_unexpected_key(tmp_path, tiny_model):
    state = official_state(tiny_model)
    state["foo"] = torch.zeros(2)
    expect_error(save_official(tmp_path / "u.pt", state), "unexpected 'foo'", n_layer=2)


def test_missing_key_in_own_format(tmp_path, tiny_model):
    path = tmp_path / "own.pt"
    save_checkpoint(path, tiny_model)
    raw = torch.load(path, weights_only=True)
    del raw["model"]["encoder_v"]
    torch.save(raw, path)
    expect_error(path, "missing 'encoder_v'")


def test_inconsistent_shapes(tmp_path, tiny_model):
    state = official_state(tiny_model)
    good = tuple(state["decoder"].shape)
    assert good == (128, 32)
    state["decoder"] = torch.zeros(64, 32)
    message = expect_error(save_official(tmp_path / "s.pt", state), "inconsistent shapes", n_layer=2)
    assert "'decoder'" in message
    assert "(64, 32)" in message and "(128, 32)" in message


def test_lm_head_vocab_mismatch(tmp_path, tiny_model):
    state = official_state(tiny_model)
    state["lm_head"] = torch.zeros(32, 100)
    message = expect_error(save_official(tmp_path / "v.pt", state), "'lm_head'", n_layer=2)
    assert "(32, 100)" in message and "(32, 256)" in message


@pytest.mark.parametrize("key", ["lm_head", "encoder_v"])
def test_nan_in_tensor(tmp_path, tiny_model, key):
    state = official_state(tiny_model)
    state[key].view(-1)[3] = float("nan")
    message = expect_error(save_official(tmp_path / "nan.pt", state), f"'{key}'", n_layer=2)
    assert "NaN" in message


def test_integer_tensor(tmp_path, tiny_model):
    state = official_state(tiny_model)
    state["lm_head"] = state["lm_head"].to(torch.int32)
    expect_error(save_official(tmp_path / "int.pt", state), "not floating point", n_layer=2)


def consistent_state(nh: int, D: int, N: int, V: int = 256) -> dict:
    """Tensors whose shapes agree with each other, for any (heads, dim, neurons)."""
    return {
        "encoder": torch.zeros(nh, D, N),
        "encoder_v": torch.zeros(nh, D, N),
        "decoder": torch.zeros(nh * N, D),
        "embed.weight": torch.zeros(V, D),
        "lm_head": torch.zeros(D, V),
        "attn.freqs": torch.zeros(1, 1, 1, N),
    }


@pytest.mark.parametrize("nh,D,N,phrase", [
    (3, 32, 8, "not a multiple of dim"),       # 24 neurons in all cannot be mult * 32
    (3, 32, 32, "not divisible"),              # heads do not divide the embedding
    (1, 3, 3, "even"),                         # odd neurons per head: no RoPE pairs
])
def test_impossible_config(tmp_path, nh, D, N, phrase):
    path = save_official(tmp_path / "bad.pt", consistent_state(nh, D, N))
    message = expect_error(path, phrase, n_layer=1)
    assert "checkpoint" in message or "neurons" in message


def test_own_format_config_disagreeing_with_shapes(tmp_path, tiny_model):
    path = tmp_path / "own.pt"
    save_checkpoint(path, tiny_model)
    raw = torch.load(path, weights_only=True)
    raw["config"]["n_head"] = 4
    torch.save(raw, path)
    expect_error(path, "n_head")


def test_unsupported_version(tmp_path, tiny_model):
    path = tmp_path / "own.pt"
    save_checkpoint(path, tiny_model)
    raw = torch.load(path, weights_only=True)
    raw["version"] = 99
    torch.save(raw, path)
    expect_error(path, "version 99")


@pytest.mark.parametrize("n_layer", [0, -1, "2"])
def test_bad_n_layer_argument(tmp_path, tiny_model, n_layer):
    path = save_official(tmp_path / "o.pt", official_state(tiny_model))
    expect_error(path, "n_layer", n_layer=n_layer)


def test_checkpoint_error_is_a_bdh_error():
    assert issubclass(CheckpointError, BDHError)


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, tiny_model):
    path = tmp_path / "sub" / "ckpt.pt"
    save_checkpoint(path, tiny_model)
    save_checkpoint(path, tiny_model)  # overwrite
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt.pt"]
    assert BDHConfig(**torch.load(path, weights_only=True)["config"]) == tiny_model.config


def test_legacy_meta_with_torch_version_object_loads(tmp_path, tiny_model):
    """Checkpoints written before the trainer stored str(torch.__version__) hold a TorchVersion
    object in their metadata; the loader accepts exactly that class (and still no others)."""
    path = tmp_path / "legacy.pt"
    save_checkpoint(path, tiny_model, {"steps": 3})
    payload = torch.load(path, weights_only=True)
    payload["meta"]["torch"] = torch.__version__  # what the early trainer wrote
    torch.save(payload, path)
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)  # a plain weights-only load refuses it
    loaded, info = load_checkpoint(path)
    assert info["meta"]["torch"] == str(torch.__version__)
    x = ids()
    assert torch.equal(logits(loaded, x), logits(tiny_model, x))
    # the allowance does not leak out of the loader
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)


def test_saved_metadata_is_plain(tmp_path, tiny_model):
    """save_checkpoint turns str subclasses into str, so plain weights-only loads work."""
    path = tmp_path / "clean.pt"
    save_checkpoint(path, tiny_model, {"torch": torch.__version__, "nested": [{"v": torch.__version__}]})
    payload = torch.load(path, weights_only=True)
    assert type(payload["meta"]["torch"]) is str


def test_legacy_non_zip_checkpoint_is_refused_before_allocation(tmp_path, tiny_model):
    from bdh_spiking.checkpoint import read_raw
    from bdh_spiking.errors import CheckpointError

    path = tmp_path / "old.pt"
    torch.save({"model": tiny_model.state_dict()}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="legacy"):
        read_raw(path)
