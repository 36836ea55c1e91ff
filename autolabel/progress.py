"""The one progress helper stages use; the CLI switches it off with --quiet."""

from __future__ import annotations

_enabled = True


def configure(enabled: bool) -> None:
    """Turns progress bars on or off for this process."""
    global _enabled
    _enabled = enabled


def enabled() -> bool:
    """Whether progress bars are shown."""
    return _enabled


def bar(total: int | None, desc: str, initial: int = 0, unit: str = "frame"):
    """A tqdm bar with rate and ETA (a silent one when progress is off)."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        disable=not _enabled,
        dynamic_ncols=True,
        smoothing=0.1,
    )
