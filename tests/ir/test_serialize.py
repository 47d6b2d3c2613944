import io
import json
import os
import zipfile

import numpy as np
import pytest
from hypothesis import given, strategies as st

from ir.digest import tensor_digest
from ir.equality import assert_programs_equal
from ir.interpret import evaluate
from ir.serialize import (SerializationError, decode_tensor, encode_tensor, from_parts, load, save,
                          to_parts)
from tests.ir.programs import inputs_for, programs, sample_program


def test_save_load_round_trip(tmp_path):
    p = sample_program()
    path = tmp_path / "model.wpz"
    save(p, path)
    back = load(path)
    assert back.digest == p.digest
    assert_programs_equal(back, p)
    assert os.listdir(tmp_path) == ["model.wpz"]  # the temp file was renamed, nothing left over


def test_file_layout(tmp_path):
    p = sample_program()
    save(p, tmp_path / "m.wpz")
    with zipfile.ZipFile(tmp_path / "m.wpz") as zf:
        names = zf.namelist()
        graph = json.loads(zf.read("graph.json"))
        assert graph["format"] == "weightpress" and graph["version"] == 1
        assert all(n == "graph.json" or (n.startswith("tensors/") and n.endswith(".bin")) for n in names)
        idx = p.main.ops[1].attrs["val"]  # uint4 [[1, 2, 3, 15]]
        assert zf.read(f"tensors/{tensor_digest(idx)}.bin") == bytes([0x21, 0xF3])
        w = p.main.ops[0].attrs["val"]
        assert zf.read(f"tensors/{tensor_digest(w)}.bin") == w.astype("<f4").tobytes()


def test_each_distinct_tensor_is_stored_once():
    p = sample_program()
    graph, tensors = to_parts(p)
    # the const's attr and its output Var share one array: one entry
    w = p.main.ops[0].attrs["val"]
    assert list(tensors).count(tensor_digest(w)) == 1
    assert set(tensors) == set(graph["tensors"])
    json.dumps(graph)  # JSON-able
    assert from_parts(graph, tensors).digest == p.digest


def test_from_parts_accepts_writeable_arrays_and_freezes_them():
    p = sample_program()
    graph, tensors = to_parts(p)
    back = from_parts(json.loads(json.dumps(graph)), {k: np.array(v) for k, v in tensors.items()})
    assert back.digest == p.digest
    assert not back.main.ops[0].attrs["val"].flags.writeable
    assert back.main.ops[0].outputs[0].val is back.main.ops[0].attrs["val"]


@pytest.mark.parametrize("arr,ir,expected", [
    (np.array([1, 2, 3], np.uint8), "uint4", bytes([0x21, 0x03])),
    (np.array([-1, 7], np.int8), "int4", bytes([0x7F])),
    (np.array([1.0, -2.0], np.float32), "fp32", bytes.fromhex("0000803f000000c0")),
    (np.array([1, 256], np.int16), "int16", bytes.fromhex("01000001")),
    (np.array([1, 256], ">i2"), "int16", bytes.fromhex("01000001")),  # always little-endian on disk
    (np.array(["int8", "é"], object), "string", '["int8", "é"]'.encode()),
])
def test_encode_decode_tensor(arr, ir, expected):
    data = encode_tensor(arr, ir)
    assert data == expected
    back = decode_tensor(data, ir, arr.shape, arr.dtype.str)
    assert back.dtype == arr.dtype and not back.flags.writeable
    np.testing.assert_array_equal(back, arr)


def test_decode_tensor_refuses_wrong_sizes():
    with pytest.raises(ValueError, match="needs 8 bytes, got 7"):
        decode_tensor(b"\0" * 7, "fp32", (2,))
    with pytest.raises(ValueError, match="packed bytes"):
        decode_tensor(b"\0" * 3, "uint4", (2,))


@given(programs())
def test_random_programs_round_trip_through_the_file(tmp_path_factory, p):
    path = tmp_path_factory.mktemp("rt") / "p.wpz"
    save(p, path)
    back = load(path)
    assert back.digest == p.digest
    assert_programs_equal(back, p)
    feed = inputs_for(p, seed=1)
    expected, got = evaluate(p, feed), evaluate(back, feed)
    for k in expected:
        np.testing.assert_array_equal(got[k], expected[k])


# ---- damaged files ------------------------------------------------------------

@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "m.wpz"
    save(sample_program(), path)
    return path


def _rewrite(path, change):
    """Rebuild the zip with change(name, data) -> data (None drops the member)."""
    with zipfile.ZipFile(path) as zf:
        members = [(n, zf.read(n)) for n in zf.namelist()]
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in members:
            new = change(n, data)
            if new is not None:
                zf.writestr(n, new)


def _first_tensor(name):
    return name.startswith("tensors/")


CORRUPTIONS = {
    "not a zip": (lambda p: p.write_bytes(b"hello, not a zip"), "damaged or not a weightpress file"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
                  "damaged or not a weightpress file"),
    "flipped byte": (lambda p: p.write_bytes(_flip(p.read_bytes())), "damaged|digest|JSON|CRC"),
    "missing graph": (lambda p: _rewrite(p, lambda n, d: None if n == "graph.json" else d),
                      "missing member graph.json"),
    "missing tensor": (lambda p: _rewrite(p, lambda n, d: None if _first_tensor(n) else d),
                       "missing member tensors/"),
    "short tensor": (lambda p: _rewrite(p, lambda n, d: d[:-1] if _first_tensor(n) else d),
                     "cannot decode"),
    "changed tensor": (lambda p: _rewrite(p, lambda n, d: bytes([d[0] ^ 1]) + d[1:] if _first_tensor(n) else d),
                       "does not match its digest|cannot decode"),
    "bad json": (lambda p: _rewrite(p, lambda n, d: d[:-3] if n == "graph.json" else d),
                 "graph.json is not valid JSON"),
    "unknown version": (lambda p: _rewrite(p, lambda n, d: d.replace(b'"version":1', b'"version":99')
                                           if n == "graph.json" else d), "unknown format version 99"),
    "malformed graph": (lambda p: _rewrite(p, lambda n, d: d.replace(b'"outputs":', b'"outptus":', 1)
                                           if n == "graph.json" else d), "malformed graph"),
}


def _flip(data: bytes) -> bytes:
    i = len(data) // 3
    return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_damaged_files_raise_serialization_error(saved, case):
    damage, reason = CORRUPTIONS[case]
    damage(saved)
    with pytest.raises(SerializationError, match=reason) as e:
        load(saved)
    assert str(saved) in str(e.value)
    assert isinstance(e.value, ValueError)


@given(st.data())
def test_any_truncation_raises_serialization_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("trunc") / "m.wpz"
    save(sample_program(), path)
    raw = path.read_bytes()
    cut = data.draw(st.integers(0, len(raw) - 1))
    path.write_bytes(raw[:cut])
    with pytest.raises(SerializationError):
        load(path)


def test_failed_save_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "m.wpz"
    save(sample_program(), path)
    before = path.read_bytes()
    p = sample_program()
    bad = p.with_function(p.main.replace(block=p.main.block.replace(
        ops=[p.main.ops[0].replace(attrs=p.main.ops[0].attrs.set("fn", object()))] + list(p.main.ops[1:]))))
    with pytest.raises(SerializationError, match="cannot serialize attribute value of type object"):
        save(bad, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.wpz"]
