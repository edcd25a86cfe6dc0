"""Dataclass configs from YAML or TOML files plus ``key=value`` overrides, strictly typed.

Unknown keys and values of the wrong type are errors that name the key::

    cfg = load_config(TrainConfig, "train.yaml", ["optim.lr=0.1", "epochs=20"])
"""

from __future__ import annotations

import dataclasses
import pathlib
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import yaml

__all__ = ["ConfigError", "config_from_dict", "config_to_dict", "load_config", "parse_overrides"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override does not fit the config's dataclass."""


def _read_file(path: str | pathlib.Path) -> dict[str, Any]:
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml", ".json"):
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(
                f"config file {str(path)!r}: unsupported suffix {path.suffix!r}; use .yaml, .yml, .toml or .json"
            )
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
    return data


def parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """``["a.b=1", "c=[1, 2]"]`` -> ``{"a": {"b": 1}, "c": [1, 2]}`` (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value (nested keys with dots: a.b=1)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override of {part!r}")
        node[parts[-1]] = value
    return tree


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _coerce(key: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"config key {key!r}: {value!r} fits none of {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"config key {key!r} must be one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {key!r} must be a mapping for {tp.__name__}, got {value!r}")
        return _build(tp, value, prefix=key + ".")
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config key {key!r} must be a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"config key {key!r} must have {len(args)} items, got {len(value)}")
            return tuple(
                _coerce(f"{key}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        item_tp = args[0] if args else Any
        items = [_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
        return (origin or tp)(items)
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {key!r} must be a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {k: _coerce(f"{key}.{k}", v, vt) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key!r} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {key!r} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"config key {key!r} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {key!r} must be a string, got {value!r}")
        return value
    if tp in (pathlib.Path, pathlib.PurePath):
        if not isinstance(value, str | pathlib.PurePath):
            raise ConfigError(f"config key {key!r} must be a path, got {value!r}")
        return pathlib.Path(value)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"config key {key!r} must be {tp.__name__}, got {value!r}")
    return value


def _build(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix + unknown[0]!r}; known keys of {prefix or 'the config'}: "
            + ", ".join(sorted(fields))
        )
    kwargs = {name: _coerce(prefix + name, value, hints[name]) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field missing
        raise ConfigError(f"config {prefix or cls.__name__}: {exc}") from None


def config_from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build a (nested) dataclass from a mapping, strictly: unknown keys and wrong types are errors."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    return _build(cls, data)


def load_config(cls: type[T], path: str | pathlib.Path | None = None, overrides: Iterable[str] = ()) -> T:
    """Defaults of ``cls``, updated by a YAML/TOML file, updated by ``key=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        data = _read_file(path)
    data = _merge(data, parse_overrides(overrides))
    return config_from_dict(cls, data)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a dataclass config (paths as strings)."""

    def convert(v: Any) -> Any:
        if isinstance(v, pathlib.PurePath):
            return str(v)
        if isinstance(v, dict):
            return {k: convert(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [convert(x) for x in v]
        return v

    return convert(dataclasses.asdict(cfg))
