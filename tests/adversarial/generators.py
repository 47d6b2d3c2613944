"""Generators of hostile inputs for the adversarial corpus (nothing binary is committed).

Each function builds one kind of bad input from a small valid one, in a directory the
caller owns: damaged bytes, hostile .wpz archives, poisoned cache directories,
degenerate weights and CLI argument lists. The tests in this directory use them; the
categories follow issue 12 (cache escape, memory bombs, silent Inf, loader validation,
interrupts, exception types, read-only caches, orphan temporaries).
"""
from __future__ import annotations

import io
import json
import zipfile
import zlib
from pathlib import Path

import numpy as np

# ---- small valid programs -----------------------------------------------------------------


def small_program(seed: int = 0, width: int = 64, dtype=np.float32):
    """x[1, width] -> linear(w[width, width], b) -> relu: one weight above the 2,048-element
    default threshold of the compression stages, so every stage has something to do."""
    from ir.builder import TensorSpec, program

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((width, width)).astype(dtype)
    bias = rng.standard_normal(width).astype(dtype)
    name = {np.float16: "fp16", np.float32: "fp32", np.float64: "fp64"}[np.dtype(dtype).type]

    @program(inputs={"x": TensorSpec((1, width), name)})
    def net(b, x):
        return b.relu(x=b.linear(x=x, weight=b.const(w, name="w"), bias=b.const(bias, name="bias")),
                      name="y")

    return net


def program_with_weight(w: np.ndarray):
    """x -> linear(w) for a given 2-D float weight (its dtype is the program's)."""
    from ir.builder import TensorSpec, program

    name = {np.float16: "fp16", np.float32: "fp32", np.float64: "fp64"}[w.dtype.type]

    @program(inputs={"x": TensorSpec((1, w.shape[1]), name)})
    def net(b, x):
        return b.linear(x=x, weight=b.const(w, name="w"), name="y")

    return net


# ---- damaged bytes --------------------------------------------------------------------------

def truncations(data: bytes, count: int = 8):
    """Prefixes of data at evenly spread lengths (never the whole)."""
    return [data[: len(data) * i // count] for i in range(count)]


def bit_flips(data: bytes, count: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        b = bytearray(data)
        i = int(rng.integers(len(b)))
        b[i] ^= 1 << int(rng.integers(8))
        out.append(bytes(b))
    return out


# ---- hostile .wpz archives ----------------------------------------------------------------

def wpz_parts(path) -> tuple:
    """(graph dict, {member name: bytes}) of a .wpz file."""
    with zipfile.ZipFile(path) as zf:
        graph = json.loads(zf.read("graph.json"))
        members = {n: zf.read(n) for n in zf.namelist() if n != "graph.json"}
    return graph, members


def write_wpz(path, graph, members: dict, compression=zipfile.ZIP_STORED) -> Path:
    """A .wpz built from parts as given (graph: a dict, or raw bytes for graph.json)."""
    raw = graph if isinstance(graph, bytes) else json.dumps(graph).encode()
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        zf.writestr("graph.json", raw)
        for name, data in members.items():
            zf.writestr(name, data)
    return Path(path)


def dtype_bomb(valid_wpz, out) -> Path:
    """The issue's 77 KB file: a tensor table entry declaring numpy dtype S2000000000."""
    graph, members = wpz_parts(valid_wpz)
    d = next(iter(graph["tensors"]))
    graph["tensors"][d]["numpy"] = "S2000000000"
    return write_wpz(out, graph, members)


def declared_size_bomb(valid_wpz, out, size: int = 4 << 30) -> Path:
    """A zip whose central directory says a tensor member holds `size` bytes (4 GiB) when
    it holds a few: a reader that trusts the declared size allocates it."""
    graph, members = wpz_parts(valid_wpz)
    d = next(iter(graph["tensors"]))
    path = write_wpz(out, graph, members)
    return _patch_declared_size(path, f"tensors/{d}.bin", size)


def _patch_declared_size(path: Path, member: str, size: int) -> Path:
    """Rewrite the uncompressed size of `member` in the central directory (zip64 extra
    field when it does not fit 32 bits), leaving the data as it is."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    at = 0
    while True:
        at = data.find(b"PK\x01\x02", at)
        if at < 0:
            raise ValueError(f"{member} not in the central directory")
        n_len = int.from_bytes(data[at + 28:at + 30], "little")
        if bytes(data[at + 46:at + 46 + n_len]) == name:
            break
        at += 4
    if size < 0xFFFFFFFF:
        data[at + 24:at + 28] = size.to_bytes(4, "little")
        path.write_bytes(bytes(data))
        return path
    # zip64: the 32-bit field says 0xFFFFFFFF and an extra field carries the size
    x_len = int.from_bytes(data[at + 30:at + 32], "little")
    c_len = int.from_bytes(data[at + 32:at + 34], "little")
    extra = (1).to_bytes(2, "little") + (8).to_bytes(2, "little") + size.to_bytes(8, "little")
    data[at + 24:at + 28] = (0xFFFFFFFF).to_bytes(4, "little")
    data[at + 30:at + 32] = (x_len + len(extra)).to_bytes(2, "little")
    insert = at + 46 + n_len + x_len
    data[insert:insert] = extra
    # the end-of-central-directory record's directory size grows by the extra field
    eocd = data.rfind(b"PK\x05\x06")
    cd_size = int.from_bytes(data[eocd + 12:eocd + 16], "little")
    data[eocd + 12:eocd + 16] = (cd_size + len(extra)).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


def deflate_bomb(out, inflated: int = 256 << 20) -> Path:
    """A small .wpz whose one tensor member inflates to `inflated` zero bytes while its
    tensor table declares a 4-element tensor (the issue's 19 MB file holding 4 GiB, scaled
    down so it is built in a fraction of a second)."""
    zeros = np.zeros(4, np.float32)
    from ir.digest import tensor_digest

    d = tensor_digest(zeros)
    graph = {"format": "weightpress", "version": 1, "attrs": {}, "functions": [
        {"name": "main", "opset": None, "block": {"inputs": [], "outputs": ["c"], "ops": [
            {"type": "const", "name": "c", "inputs": {}, "attrs": {"val": {"$tensor": d}},
             "outputs": [{"name": "c", "dtype": "fp32", "shape": [4]}]}]}}],
        "tensors": {d: {"dtype": "fp32", "numpy": "<f4", "shape": [4]}}}
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("graph.json", json.dumps(graph))
        with zf.open(f"tensors/{d}.bin", "w", force_zip64=True) as f:
            block = bytes(1 << 20)
            for _ in range(inflated >> 20):
                f.write(block)
    return Path(out)


def nested_json(depth: int = 100_000) -> bytes:
    return b"[" * depth + b"]" * depth


# Structurally invalid graphs (issue 12, item 4): each a function of a valid graph dict
# that breaks one rule; the loader must refuse them all with a one-line error naming the op.
def _main_ops(graph):
    return graph["functions"][0]["block"]["ops"]


def _first(graph, op_type):
    return next(o for o in _main_ops(graph) if o["type"] == op_type)


def _drop_required_input(g):
    del _first(g, "linear")["inputs"]["weight"]


def _unknown_op(g):
    _first(g, "relu")["type"] = "frobnicate"


def _unknown_dtype(g):
    _first(g, "relu")["outputs"][0]["dtype"] = "complex999"


def _wrong_output_shape(g):
    _first(g, "relu")["outputs"][0]["shape"] = [1, 3]


def _const_shape_disagrees(g):
    _first(g, "const")["outputs"][0]["shape"] = [7, 7]


def _negative_dim(g):
    _first(g, "relu")["outputs"][0]["shape"] = [1, -64]


def _absurd_dim(g):
    _first(g, "relu")["outputs"][0]["shape"] = [1, 1 << 42]


def _const_without_value(g):
    c = _first(g, "const")
    c.pop("attrs", None)
    for o in c["outputs"]:
        o.pop("val", None)


INVALID_GRAPHS = {
    "missing required input": _drop_required_input,
    "unknown op type": _unknown_op,
    "dtype complex999": _unknown_dtype,
    "wrong output shape": _wrong_output_shape,
    "const shape disagrees with its value": _const_shape_disagrees,
    "negative dim": _negative_dim,
    "absurd dim": _absurd_dim,
    "const with no value": _const_without_value,
}


def invalid_wpz(valid_wpz, out, breakage: str) -> Path:
    graph, members = wpz_parts(valid_wpz)
    INVALID_GRAPHS[breakage](graph)
    return write_wpz(out, graph, members)


# ---- poisoned caches ----------------------------------------------------------------------------

def entry_files(root) -> list:
    return sorted(Path(root, "entries").rglob("*.json"))


def graph_files(root) -> list:
    return sorted(Path(root, "graphs").glob("*.json"))


def rewrite_json(path, fn) -> None:
    doc = json.loads(Path(path).read_text())
    fn(doc)
    Path(path).write_text(json.dumps(doc))


# ---- degenerate weights --------------------------------------------------------------------

F16_MAX, F32_MAX = float(np.finfo(np.float16).max), float(np.finfo(np.float32).max)


def degenerate_weights(shape=(64, 64)):
    """name -> a finite weight at the edges of its float type (all finite, all hostile)."""
    rng = np.random.default_rng(0)
    alternating = np.ones(shape)
    alternating[:, ::2] = -1
    out = {
        "fp16 all 65504": np.full(shape, F16_MAX, np.float16),
        "fp16 all -65504": np.full(shape, -F16_MAX, np.float16),
        "fp16 +-65504": (alternating * F16_MAX).astype(np.float16),
        "fp16 65504 and -1": np.where(np.arange(shape[1]) == 0, -1.0, F16_MAX).astype(np.float16)
        * np.ones(shape, np.float16),
        "fp16 uniform over the range": (rng.uniform(-1, 1, shape) * F16_MAX).astype(np.float16),
        "fp16 smallest subnormal": np.full(shape, np.float16(2.0 ** -24), np.float16),
        "fp32 all FLT_MAX": np.full(shape, F32_MAX, np.float32),
        "fp32 +-FLT_MAX": (alternating * F32_MAX).astype(np.float32),
        "fp32 uniform over the range": (rng.uniform(-1, 1, shape) * F32_MAX).astype(np.float32),
        "fp32 smallest subnormal": np.full(shape, np.float32(1.4e-45), np.float32),
        "fp32 zeros": np.zeros(shape, np.float32),
    }
    return out


# ---- CLI arguments --------------------------------------------------------------------------

def nested_recipe(depth: int = 50_000) -> str:
    """A JSON recipe nested deeper than Python's recursion limit."""
    return '{"stages": ' + "[" * depth + "]" * depth + "}"


# ---- hostile ONNX ---------------------------------------------------------------------------

def onnx_mlp(width: int = 64, in_dim=None, extra_nodes=(), extra_inits=None, outputs=None):
    """x[1, width] -> MatMul(w) -> Relu -> y, as an onnx ModelProto (hostile variants below
    change one thing)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((width, width)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w")] + list((extra_inits or {}).values())
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("Relu", ["h"], ["y"], name="relu"), *extra_nodes]
    outs = outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         in_dim or [1, width])], outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def onnx_huge_input_dims():
    """Loads fine, declares a 4 TiB input: whatever samples it must refuse, not allocate."""
    return onnx_mlp(in_dim=[1 << 34, 64], outputs=[_vi("y", [1 << 34, 64])])


def _vi(name, shape, elem=None):
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, elem or TensorProto.FLOAT, shape)


def onnx_unknown_domain():
    """A node of a domain nobody implements, feeding the output."""
    from onnx import helper

    m = onnx_mlp(extra_nodes=[helper.make_node("Frob", ["y"], ["z"], name="frob", domain="com.example.evil")],
                 outputs=[_vi("z", [1, 64])])
    m.opset_import.append(helper.make_opsetid("com.example.evil", 1))
    return m


def onnx_empty_if():
    """An If whose branches are empty graphs (no outputs)."""
    from onnx import TensorProto, helper, numpy_helper

    empty = helper.make_graph([], "empty", [], [])
    cond = numpy_helper.from_array(np.array(True), "cond")
    return onnx_mlp(extra_nodes=[helper.make_node("If", ["cond"], ["z"], name="if",
                                                  then_branch=empty, else_branch=empty)],
                    extra_inits={"cond": cond}, outputs=[_vi("y", [1, 64]), _vi("z", [1], TensorProto.FLOAT)])


def onnx_string_initializer():
    """A string tensor initializer that an op consumes."""
    from onnx import TensorProto, helper

    s = helper.make_tensor("s", TensorProto.STRING, [2], [b"a", b"b"])
    return onnx_mlp(extra_nodes=[helper.make_node("Identity", ["s"], ["z"], name="ident")],
                    extra_inits={"s": s}, outputs=[_vi("y", [1, 64]), _vi("z", [2], TensorProto.STRING)])


def onnx_short_raw_data():
    """An initializer whose dims promise 2^40 floats over 16 bytes of raw data."""
    from onnx import TensorProto, helper

    t = TensorProto(name="big", data_type=TensorProto.FLOAT, dims=[1 << 20, 1 << 20], raw_data=b"\0" * 16)
    return onnx_mlp(extra_nodes=[helper.make_node("Identity", ["big"], ["z"], name="ident")],
                    extra_inits={"big": t}, outputs=[_vi("y", [1, 64]), _vi("z", [1 << 20, 1 << 20])])


def onnx_negative_dims():
    from onnx import TensorProto, helper

    t = TensorProto(name="neg", data_type=TensorProto.FLOAT, dims=[-4], raw_data=b"\0" * 16)
    return onnx_mlp(extra_nodes=[helper.make_node("Identity", ["neg"], ["z"], name="ident")],
                    extra_inits={"neg": t}, outputs=[_vi("y", [1, 64]), _vi("z", [4])])


def onnx_external_data_escape():
    """An initializer whose external data lives at ../../../etc/passwd."""
    from onnx import TensorProto, helper

    t = TensorProto(name="ext", data_type=TensorProto.FLOAT, dims=[4])
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "../../../../etc/passwd"), ("offset", "0"), ("length", "16")):
        e = t.external_data.add()
        e.key, e.value = k, v
    return onnx_mlp(extra_nodes=[helper.make_node("Identity", ["ext"], ["z"], name="ident")],
                    extra_inits={"ext": t}, outputs=[_vi("y", [1, 64]), _vi("z", [4])])


def onnx_deeply_nested_if(depth: int = 30):
    """If inside If inside If ... `depth` levels (protobuf itself refuses files nested past ~100
    messages, about 33 levels of If)."""
    from onnx import TensorProto, helper, numpy_helper

    def leaf(i):
        return helper.make_graph([helper.make_node("Identity", ["y"], [f"leaf{i}"])], f"leaf{i}", [],
                                 [_vi(f"leaf{i}", [1, 64])])

    inner = leaf(0)  # one branch nests, the other is a leaf: the file grows linearly with depth
    for i in range(depth):
        node = helper.make_node("If", ["cond"], [f"out{i + 1}"], then_branch=inner, else_branch=leaf(i + 1))
        inner = helper.make_graph([node], f"level{i}", [], [_vi(f"out{i + 1}", [1, 64])])
    top = helper.make_node("If", ["cond"], ["z"], name="top", then_branch=inner, else_branch=leaf(depth + 1))
    return onnx_mlp(extra_nodes=[top], extra_inits={"cond": numpy_helper.from_array(np.array(True), "cond")},
                    outputs=[_vi("z", [1, 64])])


HOSTILE_ONNX = {
    "4 TiB input dims": onnx_huge_input_dims,
    "unknown domain": onnx_unknown_domain,
    "empty If": onnx_empty_if,
    "string initializer": onnx_string_initializer,
    "2^40 floats over 16 bytes": onnx_short_raw_data,
    "negative dims": onnx_negative_dims,
    "external data outside the model's directory": onnx_external_data_escape,
    "If nested 30 deep": onnx_deeply_nested_if,
}


def write_onnx(model, path) -> Path:
    Path(path).write_bytes(model.SerializeToString())
    return Path(path)
