"""Hardware profiles: shipped files load and cite their sources; bad files fail clearly."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bdh_spiking import profiles as prof
from bdh_spiking.errors import BDHError, ProfileError
from bdh_spiking.profiles import list_profiles, load_all, load_profile

SHIPPED = ["cpu", "digital45nm", "gpu", "loihi", "loihi2", "spinnaker", "spinnaker2", "truenorth"]

VALID = """\
schema_version = 1

[device]
name = "My Chip"
kind = "neuromorphic"

[energy]
synaptic_op = { value = 1.0e-12, source = "Doe et al. 2024, Table 1", year = 2024 }
neuron_update = { value = 2e-12, source = "Doe et al. 2024, Table 1", year = 2024 }

[capacity]
cores_per_chip = { value = 16, source = "Doe et al. 2024", year = 2024 }
"""


def write(tmp_path: Path, text: str, name: str = "my_chip.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ---------------------------------------------------------------------------------------------
# Shipped profiles


def test_shipped_names():
    assert list_profiles() == SHIPPED


def test_every_shipped_profile_loads_and_is_cited():
    loaded = load_all()
    assert sorted(loaded) == SHIPPED
    for key, p in loaded.items():
        assert p.key == key and p.path.name == f"{key}.toml"
        assert p.name and p.kind in prof.KINDS
        assert p.energy, key
        for table, entries, vocab in (("energy", p.energy, prof.ENERGY_EVENTS),
                                      ("capacity", p.capacity, prof.CAPACITY_FIELDS)):
            for n, e in entries.items():
                where = f"{key}: {table}.{n}"
                assert n in vocab, f"{where} is not a standard name"  # shipped files stay uniform
                assert e.source.strip(), where
                assert isinstance(e.year, int) and 1900 <= e.year <= 2100, where
                assert e.value >= 0, where
                if e.assumption or not e.verified:
                    assert e.note, f"{where} needs a note"
        for n, e in p.energy.items():
            assert isinstance(e.value, float), n


def test_required_numbers():
    loihi = load_profile("loihi")
    assert loihi.joules("synaptic_op") == pytest.approx(23.6e-12)
    assert loihi.joules("spike_hop") == pytest.approx(3.5e-12)
    assert loihi.joules("neuron_update") == pytest.approx(81e-12)
    assert loihi.joules("plastic_update") == pytest.approx(120e-12)
    assert loihi.capacity["cores_per_chip"].value == 128

    spinn = load_profile("spinnaker")
    assert spinn.joules("synaptic_op") == pytest.approx(13.3e-9)
    assert spinn.joules("neuron_update") == pytest.approx(26e-9)

    spinn2 = load_profile("spinnaker2")
    assert spinn2.joules("synaptic_op") == pytest.approx(450e-12)
    assert spinn2.joules("neuron_update") == pytest.approx(2.19e-9)

    tn = load_profile("truenorth")
    assert tn.joules("synaptic_op") == pytest.approx(26e-12)
    assert tn.capacity["cores_per_chip"].value == 4096
    assert tn.capacity["neurons_per_core"].value == 256
    assert tn.capacity["synapses_per_core"].value == 256 * 256

    h = load_profile("digital45nm")
    assert h.joules("mac") == pytest.approx(4.6e-12)
    assert h.joules("mac") == pytest.approx(h.joules("mult") + h.joules("add"))
    assert h.joules("add") == pytest.approx(0.9e-12)
    assert h.joules("mult_int8") == pytest.approx(0.2e-12)
    assert h.joules("add_int8") == pytest.approx(0.03e-12)
    assert h.joules("add_int32") == pytest.approx(0.1e-12)
    assert h.joules("sram_read_32b") == pytest.approx(5e-12)
    assert h.joules("dram_read_32b") == pytest.approx(640e-12)

    l2 = load_profile("loihi2")
    assert l2.capacity["cores_per_chip"].value == 128
    assert l2.capacity["neurons_per_core"].value == 8192
    assert l2.capacity["synaptic_memory_bytes_per_core"].value == 128 * 1024
    assert l2.capacity["graded_spike_payload_bits"].value == 32
    assert "graded_synaptic_op" in l2.energy
    # No public per-op energy for Loihi 2: every energy entry must say it is an assumption.
    assert all(e.assumption and e.basis == "assumed" for e in l2.energy.values())

    for key in ("gpu", "cpu"):
        p = load_profile(key)
        assert p.kind == "conventional"
        assert p.joules("mac") == pytest.approx(2 * p.joules("flop"))
        assert all(e.basis == "derived" for e in p.energy.values())
        assert "TDP" in p.name


def test_truenorth_total_energy_is_not_double_counted():
    tn = load_profile("truenorth")
    for n in ("neuron_update", "spike_hop"):
        assert tn.joules(n) == 0.0 and tn.energy[n].assumption


def test_names_are_case_insensitive_and_profiles_immutable():
    p = load_profile("Loihi")
    assert p.key == "loihi"
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.name = "x"  # type: ignore[misc]
    hash(p)


def test_joules_of_missing_event_names_what_exists():
    with pytest.raises(ProfileError, match=r"no energy entry 'plastic_update' \(has: neuron_update,"):
        load_profile("truenorth").joules("plastic_update")


# ---------------------------------------------------------------------------------------------
# User profiles and lookup errors


def test_user_profile_by_path(tmp_path):
    extension = 'x_dendrite_op = { value = 3e-12, source = "own estimate", year = 2025 }\n'
    path = write(tmp_path, VALID.replace("[capacity]", extension + "\n[capacity]"))
    for arg in (path, str(path)):
        p = load_profile(arg)
        assert p.name == "My Chip" and p.key == "my_chip" and p.path == path
        assert p.joules("synaptic_op") == 1e-12
        assert p.joules("x_dendrite_op") == 3e-12
        assert p.capacity["cores_per_chip"].value == 16
        assert p.assumptions() == [] and p.unverified() == []


def test_unknown_name_lists_valid_names():
    with pytest.raises(ProfileError) as ei:
        load_profile("loihi3")
    msg = str(ei.value)
    assert "'loihi3'" in msg and "valid names: " + ", ".join(SHIPPED) in msg
    assert isinstance(ei.value, BDHError)


def test_missing_file(tmp_path):
    with pytest.raises(ProfileError, match="profile file not found: .*nope.toml"):
        load_profile(tmp_path / "nope.toml")


def test_installed_subpackage_location_is_preferred(tmp_path, monkeypatch):
    pkg = tmp_path / "hardware_profiles"
    pkg.mkdir()
    write(pkg, VALID, "onlyone.toml")
    calls = []

    def fake_files(name):
        calls.append(name)
        return pkg

    monkeypatch.setattr(prof.resources, "files", fake_files)
    assert list_profiles() == ["onlyone"]
    assert calls[0] == "bdh_spiking.hardware_profiles"
    assert load_profile("onlyone").path == pkg / "onlyone.toml"


def test_falls_back_to_repo_folder_without_subpackage(monkeypatch):
    def no_package(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(prof.resources, "files", no_package)
    assert prof.profiles_dir() == Path(prof.__file__).resolve().parents[1] / "hardware_profiles"
    assert list_profiles() == SHIPPED


# ---------------------------------------------------------------------------------------------
# Malformed profiles


def _sub(old: str, new: str) -> str:
    assert old in VALID
    return VALID.replace(old, new)


SYN = 'synaptic_op = { value = 1.0e-12, source = "Doe et al. 2024, Table 1", year = 2024 }'
NEURON = 'neuron_update = { value = 2e-12, source = "Doe et al. 2024, Table 1", year = 2024 }'
OK = 'value = 1e-12, source = "Doe", year = 2024'
MUST = "energy.synaptic_op.value must be a non-negative number, got "


def syn(fields: str) -> str:
    """VALID with the synaptic_op entry's fields replaced."""
    return _sub(SYN, "synaptic_op = { " + fields + " }")


BAD = {
    "not_toml": ("this is = = not toml [", "not valid TOML"),
    "no_device": (_sub('[device]\nname = "My Chip"\nkind = "neuromorphic"\n', ""),
                  "missing [device]"),
    "no_name": (_sub('name = "My Chip"\n', ""), "device.name is required"),
    "empty_name": (_sub('name = "My Chip"', 'name = "  "'), "device.name is required"),
    "bad_kind": (_sub('kind = "neuromorphic"', 'kind = "quantum"'), "device.kind must be one of"),
    "device_typo": (_sub('kind = "neuromorphic"', 'kind = "neuromorphic"\nnmae = "x"'),
                    "device has unknown field 'nmae'"),
    "no_energy": (_sub(f"[energy]\n{SYN}\n{NEURON}\n", ""), "missing [energy]"),
    "no_value": (syn('source = "Doe", year = 2024'), "energy.synaptic_op.value is required"),
    "no_source": (syn("value = 1e-12, year = 2024"), "energy.synaptic_op.source is required"),
    "empty_source": (syn('value = 1e-12, source = "", year = 2024'),
                     "energy.synaptic_op.source must be non-empty"),
    "no_year": (syn('value = 1e-12, source = "Doe"'), "energy.synaptic_op.year is required"),
    "year_text": (syn('value = 1e-12, source = "Doe", year = "2018"'),
                  "energy.synaptic_op.year must be an integer year"),
    "negative": (syn('value = -1e-12, source = "Doe", year = 2024'), MUST + "-1e-12"),
    "non_numeric": (syn('value = "abc", source = "Doe", year = 2024'),
                    "profile my_chip.toml: " + MUST + "'abc'"),
    "bool_value": (syn('value = true, source = "Doe", year = 2024'), MUST + "True"),
    "inf_value": (syn('value = inf, source = "Doe", year = 2024'), MUST + "inf"),
    "bare_number": (_sub(SYN, "synaptic_op = 1e-12"), "energy.synaptic_op must be a table"),
    "entry_typo": (syn(OK + ', sorce = "x"'), "energy.synaptic_op has unknown field 'sorce'"),
    "unknown_event": (_sub("synaptic_op = {", "synaptic_ops = {"),
                      "unknown energy entry 'synaptic_ops' (did you mean 'synaptic_op'?"),
    "unknown_capacity": (_sub("cores_per_chip = {", "cores = {"), "unknown capacity entry 'cores'"),
    "capacity_negative": (_sub("value = 16", "value = -16"),
                          "capacity.cores_per_chip.value must be a non-negative number, got -16"),
    "assumption_no_note": (syn(OK + ", assumption = true"),
                           "energy.synaptic_op.note is required when assumption = true"),
    "unverified_no_note": (syn(OK + ", verified = false"),
                           "energy.synaptic_op.note is required when verified = false"),
    "bad_basis": (syn(OK + ', basis = "guess"'), "energy.synaptic_op.basis must be one of"),
    "assumed_without_flag": (syn(OK + ', basis = "assumed"'),
                             "energy.synaptic_op.basis is 'assumed' but assumption is not true"),
    "unknown_table": (VALID + '\n[power]\nidle = { value = 1, source = "x", year = 2020 }\n',
                      "unknown top-level table [power]"),
    "unknown_key": ("color = 'red'\n" + VALID, "unknown top-level key 'color'"),
    "schema_version": (_sub("schema_version = 1", "schema_version = 2"),
                       "schema_version must be 1, got 2"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_profile_names_file_and_field(tmp_path, case):
    text, expected = BAD[case]
    path = write(tmp_path, text)
    with pytest.raises(ProfileError) as ei:
        load_profile(path)
    msg = str(ei.value)
    assert msg.startswith("profile my_chip.toml: "), msg
    assert expected in msg, msg
    assert "\n" not in msg


def test_valid_fixture_is_valid(tmp_path):
    load_profile(write(tmp_path, VALID))
