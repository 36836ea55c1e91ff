"""Third-party plug-ins through entry points: base models (``autolabel.labelers``) and formats (``autolabel.formats``).

A package registers an object under one of the groups in its ``pyproject.toml``::

    [project.entry-points."autolabel.formats"]
    example-csv = "example_plugin.csv_format:CsvFormat"

Built-ins are registered in code, so a checkout run from a plain ``PYTHONPATH`` has them
all. A plug-in that fails to import is one warning line naming it, and the rest (built-ins,
``--help``) works on; one that reuses a name already taken is refused with one line.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from importlib import metadata

log = logging.getLogger(__name__)

LABELERS = "autolabel.labelers"
FORMATS = "autolabel.formats"


def _distribution(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else ep.value


@functools.cache
def _entry_points(group: str) -> tuple[metadata.EntryPoint, ...]:
    return tuple(sorted(metadata.entry_points(group=group), key=lambda ep: ep.name))


def load(group: str, taken: set[str], check: Callable[[object, str], object]) -> dict[str, object]:
    """The plug-ins of ``group``, by name, each checked (and perhaps converted) by ``check(obj, name)``.

    Args:
        group: The entry point group.
        taken: Names already registered (built-ins): a plug-in reusing one is refused.
        check: Returns the registered object, or raises TypeError/ValueError saying why it is none.
    """
    found: dict[str, object] = {}
    for ep in _entry_points(group):
        where = f"plug-in {ep.name!r} ({_distribution(ep)})"
        if ep.name in taken or ep.name in found:
            log.warning("%s: the name %r is taken (built-in or another plug-in); refused", where, ep.name)
            continue
        try:
            obj = check(ep.load(), ep.name)
        # A plug-in's import may fail any way its code can; one warning names it and the run goes on.
        except Exception as exc:  # noqa: BLE001
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            log.warning(
                "%s: cannot be loaded (%s%s); ignored", where, type(exc).__name__, f": {first}" if first else ""
            )
            continue
        found[ep.name] = obj
    return found


def registered(obj: object, kind: type, name: str):
    """What an entry point (or a built-in) registers: an instance of ``kind`` (a class or factory is called)
    whose ``name`` is the name it is registered under; TypeError or ValueError saying why not."""
    value = obj() if callable(obj) and not isinstance(obj, kind) else obj
    if not isinstance(value, kind):
        raise TypeError(f"{obj!r} is not an autolabel {kind.__name__} ({kind.__module__}.{kind.__name__})")
    if value.name != name:
        raise ValueError(f"its name is {value.name!r}, registered as {name!r}")
    return value
