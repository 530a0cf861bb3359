"""Typed settings from CLI flags and env vars, for a frozen dataclass of fields made by `setting`.

Every field `some_name` is a flag `--some-name` and an environment variable `<PREFIX>SOME_NAME`;
the flag wins over the variable, the variable over the default. Booleans are `--x/--no-x` flags
and `1/true/yes/on` in the environment; tuple defaults make comma-separated list settings.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import field
from typing import Any


def setting(default: Any, help: str, **kw: Any) -> Any:
    """A settings field: its `help` is the flag's, `choices` (in kw) restricts its values."""
    meta = {"help": help, **kw}
    if isinstance(default, tuple):
        meta["list"] = True
    return field(default=default, metadata=meta)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def convert(f: dataclasses.Field, raw: str) -> Any:
    """An env var's (or a flag's) text as the field's type; ValueError when it is not one."""
    if f.metadata.get("list"):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    kind = str(f.type)
    if "bool" in kind:
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if "int" in kind:
        return int(raw)
    if "float" in kind:
        return float(raw)
    return raw


def build_parser(cls: type, prefix: str, help_of: Callable[[dataclasses.Field, str], str],
                 **parser_kw: Any) -> argparse.ArgumentParser:
    """One flag per field of `cls`; `help_of(field, env var name)` writes its help text."""
    parser = argparse.ArgumentParser(**parser_kw)
    for f in dataclasses.fields(cls):
        kw: dict[str, Any] = {"dest": f.name, "default": None, "help": help_of(f, prefix + f.name.upper())}
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        if "bool" in str(f.type):
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = lambda raw, f=f: convert(f, raw)
        parser.add_argument(_flag(f.name), **kw)
    return parser


def parse(cls: type, parser: argparse.ArgumentParser, prefix: str, argv: Sequence[str] | None,
          env: Mapping[str, str] | None) -> Any:
    """Flags over env vars over defaults; SystemExit (argparse's) on a bad flag or variable."""
    env = os.environ if env is None else env
    args = parser.parse_args(argv)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        value, name = getattr(args, f.name), prefix + f.name.upper()
        if value is None and name in env:
            try:
                value = convert(f, env[name])
            except ValueError:
                parser.error(f"invalid value for {name}: {env[name]!r}")
            if "choices" in f.metadata and value not in f.metadata["choices"]:
                parser.error(f"{name} must be one of {f.metadata['choices']}")
        if value is not None:
            values[f.name] = value
    return cls(**values)
