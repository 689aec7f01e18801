"""Host batches prepared in a background thread while the accelerator runs the current step.

The trainer reads the step's metrics back from the device every step; without a lookahead the
next batch's reading, tokenizing and packing would start only then, and its time would add to
every step. The order of batches is the wrapped iterator's own, so a run is the same with or
without prefetching.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Iterator

_END = object()


class Prefetcher:
    """Iterates ``iterator`` in a daemon thread, ``depth`` items ahead of the consumer.

    An exception raised by the wrapped iterator is raised again by ``__next__``, in order.
    Attribute lookups fall through to the wrapped iterator (e.g. a mixture's ``plan``).
    """

    def __init__(self, iterator: Iterator[Any], depth: int = 2):
        if depth < 1:
            raise ValueError(f"Prefetch depth {depth} must be >= 1.")
        self._iterator = iterator
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._produce, name="batch-prefetch", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            for item in self._iterator:
                if not self._put((True, item)):
                    return
        except BaseException as err:  # noqa: BLE001 (handed to the consumer)
            self._put((False, err))
            return
        self._put((True, _END))

    def _put(self, entry) -> bool:
        """Put unless closed; False once the consumer has closed the prefetcher."""
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> "Prefetcher":
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        ok, item = self._queue.get()
        if not ok:
            self._done = True
            raise item
        if item is _END:
            self._done = True
            raise StopIteration
        return item

    def close(self, timeout: float = 30.0) -> None:
        """Stop the producer thread: it ends after the item it is preparing (waited for up to
        ``timeout`` seconds; a daemon thread never keeps the process alive)."""
        self._stop.set()
        self._thread.join(timeout)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._iterator, name)
