"""Flags declared once: each names its config key, type and help; commands are built from groups of them.

A command's Typer parameters, the map from flags to config keys, the defaults shown in
``--help`` (read from the config's own defaults) and the check that a flag belongs to
the chosen base model or engine all come from one :class:`Flag` each.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from autolabel.errors import ConfigError


@dataclass(frozen=True)
class Flag:
    """One command-line option.

    Attributes:
        decls: Its spellings (``--frame-rate``, ``-i``; ``--on/--off`` for a boolean pair).
        type: Its Python type (``int``, ``Path``, ``list[str]``).
        help: One line for ``--help``.
        key: The config key it sets (``sampling.frame_rate``); None: the command reads it itself.
        default: The parameter's default (None for config keys: the config decides).
        needs: ``(config key, value, flag that sets it)`` the run must have for the flag to mean
            anything: given without it, the flag is an error instead of being silently ignored.
        name: The parameter name (default: from the first long spelling).
        aliases: Other spellings that still work but ``--help`` does not list (the seed's ``--frame_rate``).
        shown: The default ``--help`` shows when neither the config nor ``default`` has it.
    """

    decls: tuple[str, ...]
    type: Any
    help: str
    key: str | None = None
    default: Any = None
    needs: tuple[str, Any, str] | None = None
    name: str | None = None
    aliases: tuple[str, ...] = ()
    shown: str | None = None

    @property
    def param(self) -> str:
        if self.name:
            return self.name
        first = next(d for d in self.decls if d.startswith("--")).split("/")[0]
        return first.removeprefix("--").replace("-", "_")

    @property
    def spelling(self) -> str:
        return "/".join(d for d in self.decls if d.startswith("--"))


def config_default(key: str) -> Any:
    """The default of a config key (``sampling.frame_rate`` -> 30), for ``--help``."""
    from autolabel.config import RunConfig

    node: Any = _defaults(RunConfig)
    for part in key.split("."):
        node = getattr(node, part, None)
    return node


@functools.cache
def _defaults(cls: type) -> Any:
    return cls()


def _show(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, list):
        return ",".join(map(str, value)) or None
    return str(value)


# What a value looks like in --help (click's own names), by the flag's type.
_METAVARS = {int: "INTEGER", float: "FLOAT", str: "TEXT", Path: "PATH"}


def _metavar(flag: Flag) -> str | None:
    kind = flag.type
    if getattr(kind, "__origin__", None) is list:
        kind = kind.__args__[0]
    return _METAVARS.get(kind)


def _help(flag: Flag) -> str:
    """The flag's help with its default, as ``--help`` shows it (``[default: 30]``; a pair: the side taken)."""
    value = config_default(flag.key) if flag.key else flag.default
    if flag.type is bool and "/" in flag.decls[0]:
        on, off = flag.decls[0].split("/")
        shown = (on if value else off) if isinstance(value, bool) else None
    else:
        shown = flag.shown or _show(value if value is not ... else None)
    return f"{flag.help}  [default: {shown}]" if shown else flag.help


def _annotation(flag: Flag) -> Any:
    if not flag.decls:  # a positional argument
        return Annotated[flag.type, typer.Argument(help=flag.help, show_default=False, metavar=flag.param.upper())]
    option = typer.Option(*flag.decls, help=_help(flag), show_default=False, metavar=_metavar(flag))
    kind = flag.type if flag.default is not None else flag.type | None
    return Annotated[kind, option]


def _alias_param(flag: Flag) -> str:
    return f"{flag.param}__alias"


def _alias_annotation(flag: Flag) -> Any:
    option = typer.Option(*flag.aliases, hidden=True, metavar=_metavar(flag))
    return Annotated[flag.type | None, option]


@dataclass
class Given:
    """What a command was given: the flags by parameter name, and the config overrides they make."""

    values: dict[str, Any]
    flags: list[Flag]

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def overrides(self) -> dict[str, Any]:
        """``{config key: value}`` for the config flags that were given (paths as text)."""
        out = {}
        for f in self.flags:
            if f.key is None:
                continue
            value = self.values.get(f.param)
            out[f.key] = str(value) if isinstance(value, Path) else value
        return out

    def check_needs(self, config: Any) -> None:
        """A flag given without what it needs (another base model, another engine) is an error."""
        for f in self.flags:
            if f.needs is None or self.values.get(f.param) in (None, False):
                continue
            key, wanted, option = f.needs
            actual: Any = config
            for part in key.split("."):
                actual = getattr(actual, part)
            if actual != wanted:
                if wanted is True:
                    raise ConfigError(f"{f.spelling} applies with {option} only; add {option}, or leave it out")
                words = option.lstrip("-").replace("-", " ")
                raise ConfigError(f"{f.spelling} is for {option} {wanted} ({words}: {actual})")


def command(app: typer.Typer, name: str, flags: list[Flag], fn: Callable[[Given], Any], doc: str) -> None:
    """Registers command ``name`` with ``flags`` as its options; ``fn`` receives what was given."""
    seen: set[str] = set()
    params = []
    for f in flags:
        if f.param in seen:
            raise ValueError(f"flag {f.spelling} declared twice in {name}")
        seen.add(f.param)
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD if not f.decls else inspect.Parameter.KEYWORD_ONLY
        default = inspect.Parameter.empty if f.default is ... else f.default
        params.append(inspect.Parameter(f.param, kind, default=default, annotation=_annotation(f)))
        if f.aliases:
            alias = inspect.Parameter(
                _alias_param(f), inspect.Parameter.KEYWORD_ONLY, default=None, annotation=_alias_annotation(f)
            )
            params.append(alias)

    def handler(**values: Any) -> Any:
        for f in flags:
            if f.aliases:
                given = values.pop(_alias_param(f))
                if given is not None and values[f.param] is None:
                    values[f.param] = given
        return fn(Given(values, flags))

    handler.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    handler.__annotations__ = {p.name: p.annotation for p in params}
    handler.__name__ = name.replace("-", "_")
    handler.__doc__ = doc
    app.command(name=name)(handler)


def argument(name: str, type_: Any, help: str, default: Any = ...) -> Flag:
    """A positional argument, as a flag without spellings (see :func:`command`)."""
    return Flag((), type_, help, name=name, default=default)


def model_flags() -> list[Flag]:
    """Every base model's own flags, from the registry; each needs its model."""
    from autolabel.labelers import registry

    return [
        Flag((o.flag,), o.type, o.help, key=f"model.{o.key}", needs=("model.base_model", spec.name, "--base-model"))
        for spec, o in registry.options()
    ]
