"""The types a value can have: tensors (of known or unknown rank), and the
sequence, map and optional values ONNX models carry.

A tensor's shape is a tuple of dims (an int, or a str for a symbolic or
unknown dim: "?" is unknown, any other string names a symbol), or None when
even the rank is unknown. Nothing infers a rank it does not know: code that
needs one asks `rank` and gets None.

Every type has one text form (`str(t)`) that `parse_type` reads back; the
text printer, the native serializer and the digest all use it:

    fp32[1,?,N]   fp32[*]   seq<fp32[*]>   map<int64,fp32[]>   opt<seq<int64[?]>>
"""
from __future__ import annotations

import re
from typing import NamedTuple, Optional, Union

from ir.dtypes import DTYPES, DType, dtype as _dtype

Dim = Union[int, str]  # a str dim is symbolic ("?" when nothing is known of it)

_new_tuple = tuple.__new__


class TensorType(NamedTuple):
    dtype: str
    shape: Optional[tuple]  # None: the rank is unknown

    @classmethod
    def of(cls, dt, shape=()) -> "TensorType":
        if dt.__class__ is str and dt in DTYPES and shape.__class__ is tuple:
            for d in shape:
                if d.__class__ is not int:
                    break
            else:  # already canonical: the common case, kept cheap (no generator, no __new__ frame)
                return _new_tuple(cls, (dt, shape))
        if shape is None:
            return cls(_dtype(dt).name, None)
        return cls(_dtype(dt).name, tuple(d if isinstance(d, str) else int(d) for d in shape))

    is_tensor = True
    kind = "tensor"

    @property
    def rank(self) -> Optional[int]:
        return None if self.shape is None else len(self.shape)

    @property
    def dt(self) -> DType:
        return _dtype(self.dtype)

    @property
    def is_static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    def __str__(self) -> str:
        if self.shape is None:
            return f"{self.dtype}[*]"
        return f"{self.dtype}[{','.join(str(d) for d in self.shape)}]"


class _NotTensor:
    """What sequence, map and optional types answer where code asks a tensor question:
    no dtype of the table, no shape, no rank. `dt` raises, so numeric code that meets
    one fails loudly instead of guessing."""

    __slots__ = ()
    is_tensor = False
    shape = None
    rank = None
    is_static = False

    @property
    def dtype(self) -> str:
        return self.kind

    @property
    def dt(self) -> DType:
        raise TypeError(f"{self} is not a tensor type")

    # tuples compare by contents alone: seq<T> and opt<T> must not be equal
    def __eq__(self, other) -> bool:
        return type(other) is type(self) and tuple.__eq__(self, other)

    def __ne__(self, other) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash((self.kind, tuple(self)))


class SequenceType(_NotTensor, NamedTuple("_Seq", [("elem", object)])):
    """An ONNX sequence: any number of values of one type (a Python list at run time)."""

    kind = "sequence"

    def __str__(self) -> str:
        return f"seq<{self.elem}>"


class MapType(_NotTensor, NamedTuple("_Map", [("key", str), ("value", object)])):
    """An ONNX map from a scalar key dtype to values of one type (a dict at run time)."""

    kind = "map"

    def __str__(self) -> str:
        return f"map<{self.key},{self.value}>"


class OptionalType(_NotTensor, NamedTuple("_Opt", [("elem", object)])):
    """An ONNX optional: a value of `elem`'s type, or nothing (None at run time)."""

    kind = "optional"

    def __str__(self) -> str:
        return f"opt<{self.elem}>"


ValueType = Union[TensorType, SequenceType, MapType, OptionalType]


# ---- the text form ----------------------------------------------------------------

class TypeSyntaxError(ValueError):
    """A type's text form that does not parse; the message says where."""


_TOKEN = re.compile(r"\s*(?:(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<int>-?\d+)|(?P<str>\"(?:[^\"\\]|\\.)*\")"
                    r"|(?P<punct>[\[\]<>,*?]))")


def _tokens(text: str) -> list:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None:
            raise TypeSyntaxError(f"type {text!r}: unexpected {text[pos:pos + 10]!r}")
        out.append((m.lastgroup, m.group(m.lastgroup)))
        pos = m.end()
    return out


class _Reader:
    def __init__(self, text: str):
        self.text, self.toks, self.i = text, _tokens(text), 0

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else (None, None)

    def take(self, want: Optional[str] = None):
        kind, val = self.peek()
        if kind is None or (want is not None and val != want):
            raise TypeSyntaxError(f"type {self.text!r}: expected {want or 'more'} at token {self.i}")
        self.i += 1
        return kind, val

    def dim(self) -> Dim:
        kind, val = self.take()
        if kind == "int":
            return int(val)
        if kind == "word" or val == "?":
            return val
        if kind == "str":
            import json

            return json.loads(val)
        raise TypeSyntaxError(f"type {self.text!r}: {val!r} is not a dimension")

    def shape(self) -> Optional[tuple]:
        self.take("[")
        if self.peek()[1] == "*":
            self.take("*")
            self.take("]")
            return None
        dims = []
        while self.peek()[1] != "]":
            dims.append(self.dim())
            if self.peek()[1] != "]":
                self.take(",")
        self.take("]")
        return tuple(dims)

    def value_type(self):
        kind, word = self.take()
        if kind != "word":
            raise TypeSyntaxError(f"type {self.text!r}: expected a type name, found {word!r}")
        maker = _COMPOSITE.get(word)
        if maker is not None and self.peek()[1] == "<":
            self.take("<")
            t = maker(self)
            self.take(">")
            return t
        if word not in DTYPES:
            raise TypeSyntaxError(f"type {self.text!r}: unknown dtype {word!r}")
        return TensorType.of(word, self.shape())


def _map_args(r: _Reader) -> MapType:
    _, key = r.take()
    r.take(",")
    return MapType(key, r.value_type())


_COMPOSITE = {"seq": lambda r: SequenceType(r.value_type()), "map": _map_args,
              "opt": lambda r: OptionalType(r.value_type())}


def parse_type(text: str) -> ValueType:
    """The type whose `str` is `text`."""
    r = _Reader(text)
    t = r.value_type()
    if r.i != len(r.toks):
        raise TypeSyntaxError(f"type {text!r}: trailing text after the type")
    return t


def is_tensor(t) -> bool:
    return getattr(t, "is_tensor", False)
