"""Reading watches in tests without ever blocking for good: :func:`take`."""

from __future__ import annotations

import itertools
import threading

from keyvalue import Event, Watch

EVENT_WAIT = 5.0
"""How long a test waits for events it expects before giving up, in seconds."""


def take(watch: Watch, count: int, within: float = EVENT_WAIT) -> list[Event]:
    """The next ``count`` events, or fewer if they do not all come ``within`` seconds.

    The watch is cancelled when the time is up, which ends the iteration.
    """
    timer = threading.Timer(within, watch.cancel)
    timer.start()
    try:
        return list(itertools.islice(watch, count))
    finally:
        timer.cancel()
