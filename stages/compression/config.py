"""Which weight gets which compression parameters.

An OptimizationConfig holds a global config, per-op-type configs (the type
of the op that consumes the weight: "linear", "conv", ...) and per-name
configs (the weight's const name, or a consuming op's name). Resolution is
name > type > global; a config of None means "leave this weight alone".
A config is a plain mapping of the stage's parameters.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Mapping, Optional

from pyrsistent import PMap, freeze, pmap, thaw

from stages.compression.numeric.errors import CompressionError


class ConfigError(CompressionError):
    """An optimization config that cannot be applied; the message names the key."""


_SECTIONS = ("global_config", "op_type_configs", "op_name_configs")


@dataclass(frozen=True)
class OptimizationConfig:
    global_config: Optional[PMap] = None
    op_type_configs: PMap = field(default_factory=pmap)
    op_name_configs: PMap = field(default_factory=pmap)

    @classmethod
    def make(cls, global_config=None, op_type_configs=None, op_name_configs=None) -> "OptimizationConfig":
        for section, entries in (("op_type_configs", op_type_configs), ("op_name_configs", op_name_configs)):
            if entries is not None and not isinstance(entries, Mapping):
                raise ConfigError(f"optimization config: {section} must be a table of configs, "
                                  f"got {type(entries).__name__}")
            for key, entry in (entries or {}).items():
                _check_entry(f"{section}[{key!r}]", entry)
        _check_entry("global_config", global_config)
        return cls(_frozen(global_config), pmap({k: _frozen(v) for k, v in (op_type_configs or {}).items()}),
                   pmap({k: _frozen(v) for k, v in (op_name_configs or {}).items()}))

    @classmethod
    def from_dict(cls, d: Mapping) -> "OptimizationConfig":
        unknown = set(d) - set(_SECTIONS) - {"config_type"}
        if unknown:
            raise ConfigError(f"optimization config: unknown key(s) {sorted(unknown)}; expected {list(_SECTIONS)}")
        return cls.make(d.get("global_config"), d.get("op_type_configs"), d.get("op_name_configs"))

    @classmethod
    def from_toml(cls, text: str) -> "OptimizationConfig":
        import tomllib

        try:
            return cls.from_dict(tomllib.loads(text))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"optimization config: not valid TOML: {e}") from None

    @classmethod
    def from_json(cls, text: str) -> "OptimizationConfig":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise ConfigError(f"optimization config: not valid JSON: {e}") from None

    @classmethod
    def from_text(cls, text: str) -> "OptimizationConfig":
        """JSON when the text starts with '{', TOML otherwise."""
        return cls.from_json(text) if text.lstrip().startswith("{") else cls.from_toml(text)

    def to_dict(self) -> dict:
        return {"global_config": thaw(self.global_config), "op_type_configs": thaw(self.op_type_configs),
                "op_name_configs": thaw(self.op_name_configs)}

    def resolve(self, weight_name: str, consumer_names, consumer_types) -> Optional[Mapping]:
        """The parameters for one weight: its own name, then a consumer's name, then the
        consumers' op type (they must agree), then the global config."""
        return self.resolve_explained(weight_name, consumer_names, consumer_types)[0]

    def resolve_explained(self, weight_name: str, consumer_names, consumer_types) -> tuple:
        """(the entry ``resolve`` gives, which entry it is): e.g. ``op_type_configs['conv']``,
        so that a weight left alone by a None entry can say which one."""
        if weight_name in self.op_name_configs:
            return self.op_name_configs[weight_name], f"op_name_configs[{weight_name!r}]"
        named = {n: self.op_name_configs[n] for n in consumer_names if n in self.op_name_configs}
        if named:
            configs = list(named.values())
            if any(c != configs[0] for c in configs):
                raise ConfigError(f"weight {weight_name!r}: its consumers {sorted(named)} have "
                                  "conflicting op-name configs")
            return configs[0], f"op_name_configs[{sorted(named)[0]!r}]"
        typed = {t: self.op_type_configs[t] for t in consumer_types if t in self.op_type_configs}
        if typed:
            configs = list(typed.values())
            if any(c != configs[0] for c in configs) or len(typed) != len(set(consumer_types)):
                raise ConfigError(f"weight {weight_name!r}: its consumers {sorted(set(consumer_types))} "
                                  "have conflicting op-type configs")
            return configs[0], f"op_type_configs[{sorted(typed)[0]!r}]"
        return self.global_config, "global_config"


def _check_entry(where: str, entry) -> None:
    # None is meaningful (skip); "none" in TOML, which has no null, is accepted too
    if entry is not None and not isinstance(entry, Mapping) and entry != "none":
        raise ConfigError(f"optimization config: {where} must be a table of stage parameters or None, "
                          f"got {type(entry).__name__}")


def _frozen(entry):
    return None if entry is None or entry == "none" else freeze(dict(entry))
