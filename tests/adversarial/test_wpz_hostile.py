"""Hostile .wpz files (issue 12, items 2, 4 and 6): declarations that would allocate
gigabytes, members that inflate past what they declare, graphs that break the IR rules,
nesting past the interpreter's stack. Each is refused with a SerializationError naming the
file, before anything large is allocated; what loads is a valid program."""
from __future__ import annotations

import json
import time
import tracemalloc

import numpy as np
import pytest

from ir import InvalidProgram
from ir.serialize import SerializationError, load, save
from tests.adversarial import generators as gen
from tests.adversarial.conftest import address_space_cap, linux_only


def _refused(path, *fragments):
    with pytest.raises(SerializationError) as e:
        load(path)
    message = str(e.value)
    assert str(path) in message and "\n" not in message
    for f in fragments:
        assert f in message, message
    return message


# ---- item 2: memory bombs ---------------------------------------------------------------------

@linux_only
def test_a_dtype_bomb_is_refused_before_allocating(valid_wpz, tmp_path):
    bomb = gen.dtype_bomb(valid_wpz, tmp_path / "bomb.wpz")
    assert bomb.stat().st_size < 100_000
    with address_space_cap(256 << 20):  # S2000000000 would need 2 GB per element
        _refused(bomb, "S2000000000")


@linux_only
def test_a_member_inflating_past_its_table_entry_is_not_read(tmp_path):
    started = time.perf_counter()
    bomb = gen.deflate_bomb(tmp_path / "bomb.wpz", inflated=160 << 20)
    assert time.perf_counter() - started < 5
    assert bomb.stat().st_size < 1 << 20  # 160 MiB of zeros inflating from a few hundred KB
    with address_space_cap(64 << 20):
        _refused(bomb, "cannot decode", "holds 167772160 bytes, its table entry needs 16")


@linux_only
def test_a_declared_4_gib_member_is_refused(valid_wpz, tmp_path):
    bomb = gen.declared_size_bomb(valid_wpz, tmp_path / "bomb.wpz")
    with address_space_cap(256 << 20):
        _refused(bomb)


def test_a_member_claiming_more_than_deflate_can_produce_is_refused(tmp_path):
    """Table and directory agree on 64 MiB, but the member holds 100 compressed bytes."""
    from ir.digest import tensor_digest

    graph, members = gen.wpz_parts(gen.deflate_bomb(tmp_path / "small.wpz", inflated=1 << 20))
    d = next(iter(graph["tensors"]))
    graph["tensors"][d]["shape"] = [16 << 20]
    path = gen.write_wpz(tmp_path / "liar.wpz", graph, {f"tensors/{d}.bin": b"\0" * 100})
    gen._patch_declared_size(path, f"tensors/{d}.bin", 64 << 20)
    _refused(path, "claims 67108864 bytes")
    del tensor_digest


def test_loading_holds_about_the_tensors_once(tmp_path):
    """The bound the README states: peak traced memory while loading is about the tensors'
    bytes once, plus the graph and a chunk (here: 8 MiB of weights)."""
    w = np.random.default_rng(0).standard_normal((1024, 2048)).astype(np.float32)
    path = tmp_path / "big.wpz"
    save(gen.program_with_weight(w), path)
    tracemalloc.start()
    try:
        program = load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert program.digest == gen.program_with_weight(w).digest
    assert peak < 1.25 * w.nbytes + (2 << 20), peak / w.nbytes


# ---- item 4: the loader validates -------------------------------------------------------------

@pytest.mark.parametrize("breakage", sorted(gen.INVALID_GRAPHS))
def test_structurally_invalid_graphs_are_refused(valid_wpz, tmp_path, breakage):
    bad = gen.invalid_wpz(valid_wpz, tmp_path / "bad.wpz", breakage)
    message = _refused(bad)
    # the op (or the value) at fault is named
    assert any(name in message for name in ("'w'", "'y'", "%y", "'bias'", "linear", "relu", "frobnicate")), message


def test_an_invalid_program_error_is_also_an_invalid_program(valid_wpz, tmp_path):
    bad = gen.invalid_wpz(valid_wpz, tmp_path / "bad.wpz", "unknown op type")
    with pytest.raises(InvalidProgram, match="frobnicate"):
        load(bad)


# ---- item 6: what used to escape as other exceptions --------------------------------------------

def test_deeply_nested_graph_json(valid_wpz, tmp_path):
    _graph, members = gen.wpz_parts(valid_wpz)
    path = gen.write_wpz(tmp_path / "deep.wpz", b'{"tensors": {}, "attrs": ' + gen.nested_json() + b"}", members)
    _refused(path, "nested too deeply")


def test_deeply_nested_attribute_values(valid_wpz, tmp_path):
    """Shallow enough for the JSON parser (its limit is ~1,000 levels), deep enough for the
    reader's own recursion (several frames per level)."""
    graph, members = gen.wpz_parts(valid_wpz)
    graph["attrs"] = {"deep": "@"}
    depth = 800  # nested lists: one JSON level, two reader frames each
    raw = json.dumps(graph).replace('"@"', "[" * depth + "]" * depth).encode()
    path = gen.write_wpz(tmp_path / "deep.wpz", raw, members)
    _refused(path, "nested too deeply")


def test_scalar_out_of_range(valid_wpz, tmp_path):
    graph, members = gen.wpz_parts(valid_wpz)
    graph["attrs"] = {"big": {"$scalar": "<i8", "value": 10 ** 400}}
    _refused(gen.write_wpz(tmp_path / "big.wpz", graph, members), "malformed graph")


def test_scalar_of_a_bomb_dtype(valid_wpz, tmp_path):
    graph, members = gen.wpz_parts(valid_wpz)
    graph["attrs"] = {"s": {"$scalar": "S2000000000", "value": "x"}}
    _refused(gen.write_wpz(tmp_path / "s.wpz", graph, members), "not a numeric numpy dtype")


@pytest.mark.parametrize("key", ["../../escape", "AB" * 32, "", "0" * 63])
def test_tensor_table_keys_must_be_digests(valid_wpz, tmp_path, key):
    graph, members = gen.wpz_parts(valid_wpz)
    table = graph["tensors"]
    table[key] = table.pop(next(iter(table)))
    _refused(gen.write_wpz(tmp_path / "k.wpz", graph, members), "is not a digest")


@pytest.mark.parametrize("entry", [
    {"dtype": "fp32", "shape": [-1]},
    {"dtype": "fp32", "shape": [True]},
    {"dtype": "fp32", "shape": [1] * 40},
    {"dtype": "complex999", "shape": [4]},
    {"dtype": "fp32", "shape": [4], "numpy": "<c8"},
    {"dtype": "fp32", "shape": [4], "numpy": "V2000000000"},
    {"dtype": "fp32", "shape": [4], "numpy": ["<f4"]},
    {"dtype": "uint4", "shape": [4], "numpy": "<i4"},
    "not an object",
])
def test_hostile_tensor_table_entries(valid_wpz, tmp_path, entry):
    graph, members = gen.wpz_parts(valid_wpz)
    graph["tensors"][next(iter(graph["tensors"]))] = entry
    _refused(gen.write_wpz(tmp_path / "e.wpz", graph, members))
