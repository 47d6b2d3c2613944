import numpy as np
import pytest
from hypothesis import given, strategies as st

from ir.dtypes import dtype
from ir.packing import PackingError, pack, packed_size, unpack

# expected bytes written out by hand: element 0 in the lowest bits of byte 0
HAND = [
    ("uint1", [1, 0, 1, 1, 0, 0, 0, 0, 1], [0x0D, 0x01]),
    ("uint2", [1, 2, 3, 0, 3], [0x39, 0x03]),          # 1 | 2<<2 | 3<<4 | 0<<6 ; 3
    ("uint3", [5, 3, 7], [0xDD, 0x01]),                # 5 | 3<<3 | (7&3)<<6 ; 7>>2
    ("uint4", [1, 2, 3], [0x21, 0x03]),
    ("uint6", [63, 1, 32], [0x7F, 0x00, 0x02]),        # 63 | (1&3)<<6 ; 1>>2 | (32&15)<<4 ; 32>>4
    ("int4", [-1, 7, -8, 0], [0x7F, 0x08]),            # codes 15, 7, 8, 0
]


@pytest.mark.parametrize("name,values,expected", HAND)
def test_pack_matches_hand_computed_bytes(name, values, expected):
    arr = np.array(values, dtype(name).storage)
    assert pack(arr, name) == bytes(expected)
    back = unpack(bytes(expected), name, arr.shape)
    assert back.dtype == dtype(name).storage
    np.testing.assert_array_equal(back, arr)


def test_pack_reads_row_major():
    arr = np.array([[1, 2], [3, 4]], np.uint8)
    assert pack(arr, "uint4") == bytes([0x21, 0x43])
    np.testing.assert_array_equal(unpack(bytes([0x21, 0x43]), "uint4", (2, 2)), arr)


def test_unpacked_array_is_read_only():
    out = unpack(bytes([0x21]), "uint4", (2,))
    with pytest.raises(ValueError):
        out[0] = 3


@pytest.mark.parametrize("name,bad", [("uint4", 16), ("uint1", 2), ("int4", 8), ("int4", -9), ("uint3", 8)])
def test_out_of_range_values_are_refused(name, bad):
    with pytest.raises(PackingError, match=name):
        pack(np.array([0, bad], np.int16), name)


def test_wrong_packed_size_is_refused():
    with pytest.raises(PackingError, match="needs 2 packed bytes, got 1"):
        unpack(bytes([1]), "uint4", (3,))


def test_full_width_dtypes_are_not_packed():
    with pytest.raises(PackingError, match="not a sub-byte"):
        pack(np.zeros(3, np.uint8), "uint8")


def test_empty_array():
    assert pack(np.zeros((0, 3), np.uint8), "uint3") == b""
    assert unpack(b"", "uint3", (0, 3)).shape == (0, 3)


SUBBYTE = ["uint1", "uint2", "uint3", "uint4", "uint6", "int4"]


@st.composite
def subbyte_arrays(draw):
    name = draw(st.sampled_from(SUBBYTE))
    dt = dtype(name)
    shape = tuple(draw(st.lists(st.integers(0, 7), min_size=0, max_size=3)))
    n = int(np.prod(shape))
    values = draw(st.lists(st.integers(dt.min, dt.max), min_size=n, max_size=n))
    return name, np.array(values, dt.storage).reshape(shape)


@given(subbyte_arrays())
def test_pack_unpack_round_trip(case):
    name, arr = case
    data = pack(arr, name)
    assert len(data) == packed_size(arr.size, name) == (arr.size * dtype(name).bits + 7) // 8
    np.testing.assert_array_equal(unpack(data, name, arr.shape), arr)


@given(subbyte_arrays())
def test_packing_agrees_with_a_bit_by_bit_reference(case):
    name, arr = case
    bits = dtype(name).bits
    ref = bytearray((arr.size * bits + 7) // 8)
    for i, v in enumerate(arr.reshape(-1).tolist()):
        code = v & ((1 << bits) - 1)
        for j in range(bits):
            if code >> j & 1:
                pos = i * bits + j
                ref[pos // 8] |= 1 << (pos % 8)
    assert pack(arr, name) == bytes(ref)
