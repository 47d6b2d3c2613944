"""The text form of a program: stable, diff-friendly, and readable back.

    func main(%x: fp32[1,64]) opset iOS18 {
      %w: fp32[32,64] = const sha256:3c74df11cc13f2b8...
      %b: uint4[3] = const {1, 2, 3}
      %y: fp32[1,32] = linear(x=%x, weight=%w)
      %r: fp32[1,32] = cond(pred=%p) {
        block() {
          ...
          return (%y)
        }
        block() { ... }
      }
      %s: fp32[1,32] = onnx.Softmax(input=%y) [axis=-1]
      return (%r)
    }

One op per line, in the block's (topological) order. A const with at most
`inline_limit` elements shows its values (floats by repr, which round-trips
fp16 / fp32 / fp64 exactly); a larger one shows its tensor digest, and
`parse_program(text, tensors={digest: array})` needs that array back.
An op whose name is not the one its outputs imply says so: `... name="n"`.
Names that are not plain identifiers are quoted: %"a/b:0".

Attribute values: true false none, ints, floats (inf, -inf, nan, or
nan(0x...) for a NaN with other bits), "strings", x"hexbytes", [lists],
(tuples,), {dicts: ...}, numpy scalars fp32(1.5), and tensors
dtype[shape]{values} / dtype[shape] sha256:digest (with !"<numpy dtype>"
after the shape when the array's numpy dtype is not the IR dtype's storage).
"""
from __future__ import annotations

import json
import math
import re
from typing import Mapping, Optional

import numpy as np

from ir.core import (Block, Function, InvalidProgram, MapType, Op, OptionalType, Program, SequenceType,
                     TensorType, Var, frozen_array, gc_paused)
from ir.construct import output_names
from ir.digest import tensor_digest
from ir.ops import REGISTRY
from ir.dtypes import DTYPES, UnknownDType, dtype as lookup_dtype, from_numpy

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_VARNAME = re.compile(r"[A-Za-z0-9_.]+\Z")
_OPTYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")
_KEYWORDS = {"true", "false", "none", "inf", "nan", "name", "sha256", "block", "return", "func",
             "opset", "attrs"}


class TextParseError(ValueError):
    """The text is not a program: the message gives the line number and what was expected."""


class InvalidProgramText(TextParseError, InvalidProgram):
    """The text parses, but as a program that breaks the IR rules (ir.validate names the op)."""


# ============================================================================
# printing
# ============================================================================

def _quote(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def _var_ref(name: str) -> str:
    return "%" + (name if _VARNAME.match(name) else _quote(name))


def _ident(name: str) -> str:
    return name if _IDENT.match(name) and name not in _KEYWORDS else _quote(name)


def _dim(d) -> str:
    return str(d) if isinstance(d, int) else _ident(d)


def _shape(shape) -> str:
    return "[" + ",".join(_dim(d) for d in shape) + "]"


def _type(t) -> str:
    if t.kind == "map":
        return f"map<{t.key},{_type(t.value)}>"
    if not t.is_tensor:
        return f"{'seq' if t.kind == 'sequence' else 'opt'}<{_type(t.elem)}>"
    return f"{t.dtype}[*]" if t.shape is None else f"{t.dtype}{_shape(t.shape)}"


def _decl(v: Var) -> str:
    return f"{_var_ref(v.name)}: {_type(v.type)}"


_NAN_BITS = {np.dtype(t): np.array(np.nan, t).view(f"u{np.dtype(t).itemsize}").item()
             for t in (np.float16, np.float32, np.float64)}


def _float(x) -> str:
    """A float element, exact for its dtype: repr, or raw bits for a NaN with a payload."""
    f = float(x)
    if math.isnan(f):
        dt = np.asarray(x).dtype
        if dt in _NAN_BITS:
            bits = np.asarray(x).view(f"u{dt.itemsize}").item()
            if bits != _NAN_BITS[dt]:
                return f"nan({hex(bits)})"
        return "nan"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    return repr(f)


def _element(x, kind: str) -> str:
    if kind == "f":
        return _float(x)
    if kind == "b":
        return "true" if x else "false"
    if kind in "iu":
        return str(int(x))
    return _value(x)  # strings and python objects


def _tensor_values(arr: np.ndarray) -> str:
    kind = arr.dtype.kind
    flat = arr.reshape(-1)
    items = [_element(x, kind) for x in (flat if kind == "f" else flat.tolist())]
    return "{" + ", ".join(items) + "}"


def _tensor(arr: np.ndarray, ir_dtype: Optional[str], inline_limit: int, typed: bool = True) -> str:
    ir_name = ir_dtype or from_numpy(arr).name
    storage = lookup_dtype(ir_name).storage
    head = f"{ir_name}{_shape(arr.shape)}" if typed else ""
    if arr.dtype != storage:
        head += f"!{_quote(arr.dtype.str)}"
    if arr.size <= inline_limit:
        body = _tensor_values(arr)
    else:
        body = f"sha256:{tensor_digest(arr)}"
    return f"{head} {body}" if head and not body.startswith("{") else head + body


def _value(v, inline_limit: int = 16) -> str:
    if isinstance(v, np.ndarray):
        return _tensor(v, None, inline_limit)
    if isinstance(v, np.generic):
        return f"{from_numpy(np.asarray(v)).name}({_element(v, v.dtype.kind)})" \
            if v.dtype.kind in "fiub" else _unprintable(v)
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _float(v)
    if isinstance(v, str):
        return _quote(v)
    if isinstance(v, bytes):
        return f'x"{v.hex()}"'
    if isinstance(v, tuple):
        inner = ", ".join(_value(x, inline_limit) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    if isinstance(v, list):
        return "[" + ", ".join(_value(x, inline_limit) for x in v) + "]"
    if hasattr(v, "items"):
        return "{" + ", ".join(f"{_value(k)}: {_value(v[k], inline_limit)}" for k in sorted(v)) + "}"
    return _unprintable(v)


def _unprintable(v):
    raise ValueError(f"cannot print attribute value of type {type(v).__name__}: {v!r}")


def _default_name(outputs) -> Optional[str]:
    """The op name its outputs imply (what new_op would have named them)."""
    if len(outputs) == 1:
        return outputs[0].name
    if len(outputs) > 1 and outputs[0].name.endswith("_0"):
        base = outputs[0].name[:-2]
        if [v.name for v in outputs] == output_names(base, len(outputs)):
            return base
    return None


def _const_is_canonical(op: Op) -> bool:
    """A const printable in the short form: its output type says everything about val."""
    if len(op.outputs) != 1 or op.inputs or op.blocks or not isinstance(op.attrs.get("val"), np.ndarray):
        return False
    val, out = op.attrs["val"], op.outputs[0]
    extra = set(op.attrs) - {"val", "dtype"}
    if extra or out.type.shape != val.shape or out.val is not val:
        return False
    try:
        natural = from_numpy(val).name
    except UnknownDType:
        return False
    if "dtype" in op.attrs:
        return op.attrs["dtype"] == out.type.dtype != natural
    return out.type.dtype == natural


def _input_order(op: Op) -> list:
    """The schema's input order (x before weight), unknown names after, sorted."""
    sch = REGISTRY.get(op.op_type)
    known = [k for k in sch.input_names if k in op.inputs] if sch else []
    return known + sorted(k for k in op.inputs if k not in known)


def _op_lines(op: Op, indent: str, inline_limit: int) -> list:
    outs = ", ".join(_decl(v) for v in op.outputs)
    lhs = f"{outs} = " if outs else ""
    if op.op_type == "const" and _const_is_canonical(op):
        rhs = "const " + _tensor(op.attrs["val"], op.outputs[0].dtype, inline_limit, typed=False).lstrip()
    else:
        args = []
        for k in _input_order(op):
            v = op.inputs[k]
            # in input position parentheses always mean a tuple, even of one value
            ref = "(" + ", ".join(_var_ref(x.name) for x in v) + ")" \
                if isinstance(v, tuple) else _var_ref(v.name)
            args.append(f"{_ident(k)}={ref}")
        rhs = f"{op.op_type}({', '.join(args)})"
        if op.attrs:
            rhs += " [" + ", ".join(f"{_ident(k)}={_value(op.attrs[k], inline_limit)}"
                                    for k in sorted(op.attrs)) + "]"
    if _default_name(op.outputs) != op.name:
        rhs += f" name={_quote(op.name)}"
    if not op.blocks:
        return [f"{indent}{lhs}{rhs}"]
    lines = [f"{indent}{lhs}{rhs} {{"]
    for b in op.blocks:
        lines += _block_lines(b, "block", indent + "  ", inline_limit)
    lines.append(f"{indent}}}")
    return lines


def _block_lines(block: Block, head: str, indent: str, inline_limit: int, suffix: str = "") -> list:
    lines = [f"{indent}{head}({', '.join(_decl(v) for v in block.inputs)}){suffix} {{"]
    for op in block.ops:
        lines += _op_lines(op, indent + "  ", inline_limit)
    lines.append(f"{indent}  return ({', '.join(_var_ref(v.name) for v in block.outputs)})")
    lines.append(f"{indent}}}")
    return lines


def print_program(program: Program, inline_limit: int = 16) -> str:
    """The program as text: functions sorted by name, one op per line."""
    lines = []
    if program.attrs:
        lines.append("attrs [" + ", ".join(f"{_ident(k)}={_value(program.attrs[k], inline_limit)}"
                                           for k in sorted(program.attrs)) + "]")
    for name in sorted(program.functions):
        f = program.functions[name]
        lines += _block_lines(f.block, f"func {_ident(f.name)}", "", inline_limit,
                              f" opset {_ident(f.opset)}")
    return "\n".join(lines) + "\n"


# ============================================================================
# parsing
# ============================================================================

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<sha>sha256:[0-9a-f]+)
  | (?P<bytes>x"[0-9a-f]*")
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<var>%(?:[A-Za-z0-9_.]+|"(?:[^"\\]|\\.)*"))
  | (?P<hex>0x[0-9a-fA-F]+)
  | (?P<number>[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|-inf\b)
  | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[()\[\]{},=:!<>*])
""", re.VERBOSE)


class _Tokens:
    """The tokens of one line, with the line number for error messages."""

    def __init__(self, text: str, lineno: int):
        self.lineno = lineno
        self.pos = 0
        matches = list(_TOKEN.finditer(text))
        if sum(m.end() - m.start() for m in matches) != len(text):  # finditer skipped something
            self.locate_bad_character(text)
        self.items = [(m.lastgroup, m.group()) for m in matches if m.lastgroup != "ws"]

    def locate_bad_character(self, text: str):
        pos = 0
        for m in _TOKEN.finditer(text):
            if m.start() != pos:
                break
            pos = m.end()
        self.fail(f"unexpected character {text[pos]!r} at column {pos + 1}")

    def fail(self, msg: str):
        raise TextParseError(f"line {self.lineno}: {msg}")

    def peek(self, offset: int = 0):
        i = self.pos + offset
        return self.items[i] if i < len(self.items) else ("end", "")

    def next(self):
        tok = self.peek()
        self.pos += 1
        return tok

    def at(self, text: str) -> bool:
        if self.pos >= len(self.items):
            return False
        kind, val = self.items[self.pos]
        return val == text and (kind == "punct" or kind == "word")

    def accept(self, text: str) -> bool:
        if self.at(text):
            self.pos += 1
            return True
        return False

    def expect(self, text: str):
        if not self.accept(text):
            self.fail(f"expected {text!r} but found {self.peek()[1] or 'end of line'!r}")

    def expect_kind(self, kind: str, what: str) -> str:
        k, v = self.next()
        if k != kind:
            self.fail(f"expected {what} but found {v or 'end of line'!r}")
        return v

    def done(self):
        if self.peek()[0] != "end":
            self.fail(f"unexpected {self.peek()[1]!r} at end of line")

    # -- small grammar pieces ----------------------------------------------
    def name(self, what: str) -> str:
        kind, val = self.next()
        if kind == "word":
            return val
        if kind == "string":
            return json.loads(val)
        self.fail(f"expected {what} but found {val or 'end of line'!r}")

    def var_name(self) -> str:
        v = self.expect_kind("var", "a %value")[1:]
        return json.loads(v) if v.startswith('"') else v

    def dim(self):
        kind, val = self.next()
        if kind == "number" and re.fullmatch(r"[-+]?\d+", val):
            return int(val)
        if kind in ("word", "string"):
            return json.loads(val) if kind == "string" else val
        self.fail(f"expected a dimension but found {val or 'end of line'!r}")

    def shape(self) -> Optional[tuple]:
        self.expect("[")
        if self.accept("*"):  # unknown rank
            self.expect("]")
            return None
        dims = []
        while not self.accept("]"):
            dims.append(self.dim())
            if not self.at("]"):
                self.expect(",")
        return tuple(dims)

    def dtype_name(self) -> str:
        name = self.expect_kind("word", "a dtype")
        if name not in DTYPES:
            self.fail(f"unknown dtype {name!r}")
        return name

    def type(self):
        word = self.peek()[1]
        if word in _COMPOSITE_TYPES and self.peek(1)[1] == "<":
            self.next(), self.next()
            if word == "map":
                key = self.dtype_name()
                self.expect(",")
                t = MapType(key, self.type())
            else:
                t = _COMPOSITE_TYPES[word](self.type())
            self.expect(">")
            return t
        return TensorType(self.dtype_name(), self.shape())

    def decl(self) -> tuple:
        name = self.var_name()
        self.expect(":")
        return name, self.type()


_COMPOSITE_TYPES = {"seq": SequenceType, "opt": OptionalType, "map": MapType}

_FLOAT_WORDS = {"inf": math.inf, "nan": math.nan}


class _Parser:
    def __init__(self, text: str, tensors: Optional[Mapping]):
        self.lines = [(i + 1, line) for i, line in enumerate(text.splitlines())
                      if line.strip() and not line.lstrip().startswith("#")]
        self.pos = 0
        self.tensors = {}
        for k, v in (tensors or {}).items():
            self.tensors[k[len("sha256:"):] if k.startswith("sha256:") else k] = v

    # -- lines ---------------------------------------------------------------
    @property
    def lineno(self) -> int:
        """The line being parsed (for errors raised below the tokenizer)."""
        return self.lines[self.pos - 1][0] if 0 < self.pos <= len(self.lines) else 1

    def next_line(self) -> _Tokens:
        if self.pos >= len(self.lines):
            last = self.lines[-1][0] if self.lines else 0
            raise TextParseError(f"line {last + 1}: unexpected end of text (a block is not closed)")
        lineno, text = self.lines[self.pos]
        self.pos += 1
        return _Tokens(text, lineno)

    def program(self) -> Program:
        attrs, functions = {}, []
        while self.pos < len(self.lines):
            t = self.next_line()
            if t.accept("attrs"):
                attrs = self.attr_list(t)
                t.done()
            elif t.accept("func"):
                fname = t.name("a function name")
                block = self.block_after_head(t, {}, function=True)
                opset = self.opset
                functions.append(Function(fname, block, opset))
            else:
                t.fail(f"expected 'func' or 'attrs' but found {t.peek()[1]!r}")
        if not functions:
            raise TextParseError("line 1: no function in the text")
        names = [f.name for f in functions]
        if len(set(names)) != len(names):
            raise TextParseError(f"line 1: function defined twice in {names}")
        return Program.make(functions, attrs)

    def block_after_head(self, t: _Tokens, env: dict, function: bool = False) -> Block:
        """Parse `(%a: T, ...) [opset X] {` then the body up to the closing `}`."""
        env = dict(env)  # values defined inside stay inside
        t.expect("(")
        inputs = []
        while not t.accept(")"):
            name, typ = t.decl()
            inputs.append(self.define(t, env, Var(name, typ)))
            if not t.at(")"):
                t.expect(",")
        if function:
            t.expect("opset")
            self.opset = t.name("an opset")
        t.expect("{")
        t.done()
        ops = []
        while True:
            line = self.next_line()
            if line.accept("return"):
                outputs = self.return_list(line, env)
                close = self.next_line()
                close.expect("}")
                close.done()
                return Block.make(inputs, ops, outputs)
            ops.append(self.op(line, env))

    def define(self, t: _Tokens, env: dict, var: Var) -> Var:
        if var.name in env:
            t.fail(f"%{var.name} is defined twice")
        env[var.name] = var
        return var

    def ref(self, t: _Tokens, env: dict) -> Var:
        name = t.var_name()
        if name not in env:
            t.fail(f"unknown value %{name} (used before its definition?)")
        return env[name]

    def return_list(self, t: _Tokens, env: dict) -> list:
        t.expect("(")
        outs = []
        while not t.accept(")"):
            outs.append(self.ref(t, env))
            if not t.at(")"):
                t.expect(",")
        t.done()
        return outs

    # -- ops -------------------------------------------------------------------
    def op(self, t: _Tokens, env: dict) -> Op:
        decls = []
        while t.peek()[0] == "var":
            decls.append(t.decl())
            if not t.accept(","):
                break
        if decls:
            t.expect("=")
        op_type = t.expect_kind("word", "an op type")
        if op_type == "const" and not t.at("("):
            if len(decls) != 1:
                t.fail("a const defines exactly one value")
            attrs = self.const_body(t, decls[0][1])
            inputs = {}
        else:
            inputs = self.inputs(t, env)
            attrs = self.attr_list(t) if t.at("[") else {}
        name = None
        if t.accept("name"):
            t.expect("=")
            name = json.loads(t.expect_kind("string", "a quoted op name"))
        has_blocks = t.accept("{")
        t.done()
        blocks = []
        if has_blocks:
            while True:
                line = self.next_line()
                if line.accept("}"):
                    line.done()
                    break
                line.expect("block")
                blocks.append(self.block_after_head(line, env))
        outputs = []
        for vname, typ in decls:
            val = attrs["val"] if op_type == "const" and isinstance(attrs.get("val"), np.ndarray) \
                and len(decls) == 1 else None
            outputs.append(Var(vname, typ, val))
        if name is None:
            name = _default_name(outputs)
            if name is None:
                t.fail(f"{op_type}: the op needs name=\"...\" (its outputs do not imply one)")
        for v in outputs:
            self.define(t, env, v)
        return Op.make(op_type, name, inputs, outputs, attrs, blocks)

    def inputs(self, t: _Tokens, env: dict) -> dict:
        t.expect("(")
        ins = {}
        while not t.accept(")"):
            key = t.name("an input name")
            t.expect("=")
            if t.accept("("):
                vs = []
                while not t.accept(")"):
                    vs.append(self.ref(t, env))
                    if not t.at(")"):
                        t.expect(",")
                ins[key] = tuple(vs)
            else:
                ins[key] = self.ref(t, env)
            if not t.at(")"):
                t.expect(",")
        return ins

    def const_body(self, t: _Tokens, typ: TensorType) -> dict:
        arr = self.tensor_body(t, typ.dtype, typ.shape)
        attrs = {"val": arr}
        if from_numpy(arr).name != typ.dtype:
            attrs["dtype"] = typ.dtype
        return attrs

    # -- values ------------------------------------------------------------------
    def attr_list(self, t: _Tokens) -> dict:
        t.expect("[")
        return self.attr_items(t, "]")

    def attr_items(self, t: _Tokens, close: str) -> dict:
        attrs = {}
        while not t.accept(close):
            key = t.name("an attribute name")
            t.expect("=")
            attrs[key] = self.value(t)
            if not t.at(close):
                t.expect(",")
        return attrs

    def value(self, t: _Tokens):
        kind, val = t.peek()
        if kind == "word" and val in DTYPES and t.peek(1)[1] in ("[", "("):
            t.next()
            if t.at("["):
                return self.tensor_body(t, val, t.shape())
            return self.scalar(t, val)
        t.next()
        if kind == "string":
            return json.loads(val)
        if kind == "bytes":
            return bytes.fromhex(val[2:-1])
        if kind == "number":
            return float(val) if re.search(r"[.eEn]", val) else int(val)
        if kind == "word" and val in ("true", "false", "none"):
            return {"true": True, "false": False, "none": None}[val]
        if kind == "word" and val in _FLOAT_WORDS:
            return self.nan_bits(t, np.float64) if val == "nan" and t.at("(") else _FLOAT_WORDS[val]
        if val == "[":
            return self.sequence(t, "]")
        if val == "(":
            return tuple(self.sequence(t, ")"))
        if val == "{":
            return self.mapping(t)
        t.fail(f"expected a value but found {val or 'end of line'!r}")

    def sequence(self, t: _Tokens, close: str) -> list:
        items = []
        while not t.accept(close):
            items.append(self.value(t))
            if not t.at(close):
                t.expect(",")
        return items

    def mapping(self, t: _Tokens):
        from pyrsistent import pmap

        items = {}
        while not t.accept("}"):
            k = self.value(t)
            t.expect(":")
            items[k] = self.value(t)
            if not t.at("}"):
                t.expect(",")
        return pmap(items)

    def scalar(self, t: _Tokens, ir_name: str):
        storage = lookup_dtype(ir_name).storage
        t.expect("(")
        x = self.element(t, storage)
        t.expect(")")
        return np.array(x, dtype=storage)[()]

    def nan_bits(self, t: _Tokens, storage):
        t.expect("(")
        bits = int(t.expect_kind("hex", "hex bits"), 16)
        t.expect(")")
        storage = np.dtype(storage)
        return np.array(bits, dtype=f"u{storage.itemsize}").view(storage)[()]

    def element(self, t: _Tokens, storage: np.dtype):
        kind, val = t.peek()
        if storage.kind == "f":
            t.next()
            if kind == "number":
                return float(val)
            if kind == "word" and val == "nan" and t.at("("):
                return self.nan_bits(t, storage)
            if kind == "word" and val in _FLOAT_WORDS:
                return _FLOAT_WORDS[val]
            t.fail(f"expected a float but found {val!r}")
        if storage.kind == "b":
            t.next()
            if val in ("true", "false"):
                return val == "true"
            t.fail(f"expected true or false but found {val!r}")
        if storage.kind in "iu":
            t.next()
            if kind == "number" and re.fullmatch(r"[-+]?\d+", val):
                return int(val)
            t.fail(f"expected an integer but found {val!r}")
        return self.value(t)

    def tensor_body(self, t: _Tokens, ir_name: str, shape: tuple) -> np.ndarray:
        """After `dtype[shape]`: an optional !"numpy dtype", then {values} or sha256:digest."""
        storage = lookup_dtype(ir_name).storage
        if t.accept("!"):
            storage = self.numpy_dtype(t, ir_name)
        if t.peek()[0] == "sha":
            return self.tensor_by_digest(t, t.next()[1][len("sha256:"):], ir_name, shape, storage)
        t.expect("{")
        items = []
        while not t.accept("}"):
            items.append(self.element(t, storage))
            if not t.at("}"):
                t.expect(",")
        if any(not isinstance(d, int) or d < 0 for d in shape):
            t.fail(f"an inline tensor needs a static shape, got {list(shape)}")
        count = math.prod(shape)
        if len(items) != count:
            t.fail(f"{ir_name}{list(shape)} needs {count} values, found {len(items)}")
        if storage.kind in "US" and count * storage.itemsize > 16 * sum(len(str(x)) for x in items) + (1 << 20):
            t.fail(f"{count} strings of numpy dtype {storage.str} would take {count * storage.itemsize} bytes")
        if storage.kind == "O":
            arr = np.empty(count, dtype=object)
            arr[:] = items
        elif storage.kind == "f":
            arr = np.array([x if isinstance(x, np.generic) else storage.type(x) for x in items]
                           or np.zeros(0), dtype=storage)
        else:
            arr = np.array(items, dtype=storage)
        return frozen_array(arr.reshape(shape))

    def numpy_dtype(self, t: _Tokens, ir_name: str) -> np.dtype:
        """`!"<numpy dtype>"`: one the IR stores (ir.serialize.numpy_target decides)."""
        from ir.serialize import SerializationError, numpy_target

        text = json.loads(t.expect_kind("string", "a numpy dtype string"))
        try:
            return numpy_target(text, lookup_dtype(ir_name))
        except SerializationError as e:
            t.fail(str(e))

    def tensor_by_digest(self, t, digest, ir_name, shape, storage) -> np.ndarray:
        arr = self.tensors.get(digest)
        if arr is None:
            t.fail(f"tensor sha256:{digest} ({ir_name}{list(shape)}) is printed by digest; "
                   f"pass it in parse_program(text, tensors={{digest: array}})")
        arr = frozen_array(arr)
        if arr.shape != tuple(shape) or arr.dtype != storage:
            t.fail(f"tensor sha256:{digest}: supplied array is {arr.dtype}{list(arr.shape)}, "
                   f"text says {storage}{list(shape)}")
        if tensor_digest(arr) != digest:
            t.fail(f"tensor sha256:{digest}: the supplied array has a different digest")
        return arr


def parse_program(text: str, tensors: Optional[Mapping] = None, validate: bool = True) -> Program:
    """Read back what print_program wrote. Consts printed by digest take their
    arrays from `tensors` ({digest: array}, e.g. ir.serialize.tensors_of(p)).

    Anything wrong is a TextParseError giving the line: text that does not parse, values
    numpy refuses, nesting deeper than the interpreter's stack; with `validate` (the
    default) a program that breaks the IR rules is an InvalidProgramText naming the op."""
    parser = _Parser(text, tensors)
    try:
        with gc_paused():
            program = parser.program()
    except TextParseError:
        raise
    except RecursionError:
        raise TextParseError(f"line {parser.lineno}: nested too deeply") from None
    except (ValueError, TypeError, OverflowError, KeyError, IndexError, MemoryError) as e:
        raise TextParseError(f"line {parser.lineno}: {type(e).__name__}: {e}") from None
    if not validate:
        return program
    from ir.validate import validate as check

    try:
        return check(program)
    except InvalidProgram as e:
        raise InvalidProgramText(str(e)) from None
