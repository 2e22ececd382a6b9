"""Clean stops: Ctrl-C and SIGTERM (a scheduler's notice before preemption) finish the current
step, save and exit 0; a second Ctrl-C exits at once, which corrupts nothing since every save is
published atomically."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any


class StopRequest:
    """Set by Ctrl-C / SIGTERM (or a caller); the loop finishes its step, saves and returns.

    A second Ctrl-C raises KeyboardInterrupt at once: saves are atomic, so nothing is corrupted.
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()

    def install(self) -> Callable[[], None]:
        """Installs the signal handlers (main thread only); returns a function that removes them."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, frame: Any) -> None:
            if self and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.set()
            print(f"\n{signal.Signals(signum).name}: saving and stopping after this iteration "
                  "(Ctrl-C again to quit at once)", flush=True)

        for s in previous:
            signal.signal(s, handler)
        return lambda: [signal.signal(s, h) for s, h in previous.items()]
