"""One vocabulary: every user-visible name is kebab-case, and older spellings still read."""

from __future__ import annotations

import re

import pytest
import torch
from network_devices import almost_neuron

from quasineuron._atomic import sha256_hex
from quasineuron._checked import read_document_checked, write_document_checked
from quasineuron._names import ALIASES, NAMES, canonical
from quasineuron.network import (
    MODES,
    DeviceNetwork,
    FanIn,
    TrueDevice,
    TwoDrive,
    load_network,
    mode_from_name,
    save_network,
)
from quasineuron.network import io as net_io
from quasineuron.network.connections import CONNECTIONS, connection_from_dict
from quasineuron.network.wiring import WIRINGS, wiring_from_dict

KEBAB = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


def test_the_registries_use_exactly_the_canonical_kebab_case_names():
    assert set(CONNECTIONS) == set(NAMES["connection"])
    assert set(WIRINGS) == set(NAMES["wiring"])
    assert list(MODES) == list(NAMES["mode"])
    for names in NAMES.values():
        assert all(KEBAB.match(n) for n in names), names


@pytest.mark.parametrize(
    ("kind", "old", "new"),
    [(k, old, new) for k, table in ALIASES.items() for old, new in table.items()],
)
def test_an_old_spelling_reads_with_a_warning_that_names_the_new_one(kind, old, new):
    with pytest.warns(DeprecationWarning, match=f"write '{new}' instead"):
        assert canonical(kind, old) == new


def test_a_canonical_name_reads_silently_and_an_unknown_one_is_refused_with_the_names():
    assert canonical("connection", "two-drive") == "two-drive"  # no warning (warnings are errors)
    with pytest.raises(ValueError, match=r"unknown wiring 'fanin'.*'dense', 'sparse', 'fan-in'"):
        canonical("wiring", "fanin")
    with pytest.raises(ValueError, match="unknown kind of name"):
        canonical("readout", "final")
    with pytest.raises(TypeError, match="string"):
        canonical("mode", 3)


def test_old_connection_and_wiring_dicts_load_with_a_warning():
    with pytest.warns(DeprecationWarning, match="'two-drive'"):
        assert connection_from_dict({"kind": "two_drive", "bias": False}) == TwoDrive(bias=False)
    with pytest.warns(DeprecationWarning, match="'fan-in'"):
        assert wiring_from_dict({"kind": "fan_in", "k": 2}) == FanIn(2)
    with pytest.warns(DeprecationWarning, match="'physics-aware'"):
        assert mode_from_name("physics_aware").name == "physics-aware"


def _net() -> DeviceNetwork:
    return DeviceNetwork(
        almost_neuron(0.1), (4, 3, 2), connection=TwoDrive(), wiring=FanIn(2), dtype=torch.float64
    )


def test_a_saved_network_uses_the_new_spellings(tmp_path):
    save_network(_net(), tmp_path)
    text = (tmp_path / net_io.ARCH_FILE).read_text()
    assert '"two-drive"' in text and '"fan-in"' in text
    assert "two_drive" not in text and "fan_in" not in text


def test_a_network_saved_with_the_old_spellings_loads_with_a_warning(tmp_path):
    net = _net()
    save_network(net, tmp_path)
    arch = tmp_path / net_io.ARCH_FILE
    old = (
        arch.read_bytes().replace(b'"two-drive"', b'"two_drive"').replace(b'"fan-in"', b'"fan_in"')
    )
    assert old != arch.read_bytes()
    arch.write_bytes(old)
    # an older save: its weights carry the digest of the old network.json
    weights = tmp_path / net_io.WEIGHTS_FILE
    tensors, document = read_document_checked(weights, what="weights", fix="")
    write_document_checked(weights, tensors, {**document, net_io._ARCH_DIGEST: sha256_hex(old)})
    with pytest.warns(DeprecationWarning) as record:
        loaded = load_network(tmp_path, device=almost_neuron(0.1))
    said = " ".join(str(w.message) for w in record)
    assert "'two-drive' instead" in said and "'fan-in' instead" in said
    x = torch.rand(5, 4, dtype=torch.float64)
    torch.testing.assert_close(loaded(x, mode=TrueDevice()), net(x, mode=TrueDevice()))
