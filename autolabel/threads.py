"""Two small concurrency helpers: a prefetching iterator and a background worker."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def prefetch(items: Iterable[Any], depth: int = 8) -> Iterator[Any]:
    """Runs ``items`` on a thread, ``depth`` items ahead; re-raises its errors here."""
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, not swallowed
            q.put(_Failure(exc))

    thread = threading.Thread(target=produce, name="autolabel-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


class Worker:
    """Calls ``fn(item)`` for each ``put`` item on one background thread, in order.

    ``flush`` (optional) runs whenever the queue has run dry and before the worker
    stops: the place to commit a group of items at once (one fsync for many files).
    """

    def __init__(self, fn: Callable[[Any], None], depth: int = 16, flush: Callable[[], None] | None = None) -> None:
        self._fn = fn
        self._flush = flush
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="autolabel-writer", daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[..., None], *args: Any) -> None:
        if self._error is None:
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 - re-raised by put/close
                self._error = exc

    def _loop(self) -> None:
        while True:
            item = self._q.get()
            if item is _DONE:
                if self._flush is not None:
                    self._run(self._flush)
                return
            self._run(self._fn, item)
            if self._flush is not None and self._q.empty():
                self._run(self._flush)

    def put(self, item: Any) -> None:
        """Queues an item; raises the worker's first error, if any."""
        if self._error is not None:
            raise self._error
        self._q.put(item)

    def close(self) -> None:
        """Finishes queued items, stops the thread, raises its first error."""
        self._q.put(_DONE)
        self._thread.join()
        if self._error is not None:
            raise self._error
