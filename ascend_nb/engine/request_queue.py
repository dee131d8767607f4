"""One request at a time per engine, in arrival order: a waiting request can be stopped, and shown.

A local engine keeps its KV cache and step state on the instance, so two callers (two chat widgets,
a widget and a cell) must take turns or both answers are corrupted. :class:`RequestQueue` is that
turn: a request holds it from its prefill to its last token (for a stream: from its first piece
until it is exhausted, closed or dropped). :func:`on_wait` lets a caller show that its request is
queued behind another one.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ascend_nb.errors import AscendNbError

STOP_POLL_S = 0.05  # how often a queued request looks at its stop_event
_hooks = threading.local()


@contextmanager
def on_wait(callback: Callable[[bool], None]) -> Iterator[None]:
    """While in this block, a request made by this thread that has to queue calls ``callback(True)``
    before it waits and ``callback(False)`` once it has the engine (e.g. to show "waiting")."""
    previous = getattr(_hooks, "callback", None)
    _hooks.callback = callback
    try:
        yield
    finally:
        _hooks.callback = previous


class RequestQueue:
    """A first-come first-served lock for one engine's requests."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._queue: deque[object] = deque()
        self._holder: int | None = None  # thread that started the running request

    @property
    def busy(self) -> bool:
        """True while a request is running (others queue behind it)."""
        return self._holder is not None

    @property
    def waiting(self) -> int:
        """How many requests are queued."""
        with self._condition:
            return len(self._queue)

    def acquire(self, stop_event: threading.Event | None = None) -> bool:
        """Wait for this request's turn; False (without the turn) if ``stop_event`` is set meanwhile.

        A thread whose own request is still open (a stream it has not finished or closed) is refused
        in one line instead of waiting for itself forever.
        """
        me = threading.get_ident()
        token = object()
        callback = getattr(_hooks, "callback", None)
        with self._condition:
            if self._holder == me:
                raise AscendNbError("this thread still has a request open on this engine (an unfinished stream): "
                                    "finish it (stream.finish()) or close it (stream.close()) first")
            self._queue.append(token)
            queued = self._holder is not None or self._queue[0] is not token
        try:
            if queued and callback is not None:
                callback(True)  # outside the lock: the callback may draw widgets
            with self._condition:
                while self._holder is not None or self._queue[0] is not token:
                    if stop_event is not None and stop_event.is_set():
                        return False
                    self._condition.wait(STOP_POLL_S if stop_event is not None else None)
                self._holder = me
        finally:
            with self._condition:
                self._queue.remove(token)
                self._condition.notify_all()
        if queued and callback is not None:
            try:
                callback(False)
            except BaseException:
                self.release()
                raise
        return True

    def release(self) -> None:
        """End the running request (from any thread: a dropped stream is finalized wherever it is)."""
        with self._condition:
            self._holder = None
            self._condition.notify_all()
