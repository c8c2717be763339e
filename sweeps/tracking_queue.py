"""MLflow calls off the training path: one background thread per tracking URI performs them in order, and
retries through outages, so a slow or absent tracking server never holds up Tune (whose trials wait for
the driver to take each report) and no point is lost while the server is away.

A call fails for good only when the server answers that it is wrong (MLflow's client errors: a bad
parameter, a missing run); every other failure — connection refused, a timeout, a 5xx, a locked SQLite
file — is retried with back-off until it succeeds. :func:`flush_all` waits until every queued call is done
(the sweep calls it before it reads the store back for its tables).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

#: MLflow error codes that mean "the request is wrong": retrying cannot help.
PERMANENT_CODES = frozenset(
    {
        "INVALID_PARAMETER_VALUE",
        "RESOURCE_DOES_NOT_EXIST",
        "RESOURCE_ALREADY_EXISTS",
        "INVALID_STATE",
        "BAD_REQUEST",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
    }
)

_LIVE: weakref.WeakSet[TrackingQueue] = weakref.WeakSet()


def is_permanent(exc: BaseException) -> bool:
    """Whether an MLflow call failed because of the request itself (not the server's availability)."""
    code = getattr(exc, "error_code", None)
    return isinstance(code, str) and code in PERMANENT_CODES


class TrackingQueue:
    """Ordered MLflow calls on a background thread, retried until they succeed.

    Args:
        tracking_uri: the MLflow tracking URI (one client for the thread).
        backoff_s: seconds between retries of a failing call (the last value repeats).
    """

    def __init__(self, tracking_uri: str, backoff_s: tuple[float, ...] = (0.5, 1, 2, 4, 8, 15)):
        self.tracking_uri = tracking_uri
        self.backoff_s = backoff_s
        self._queue: queue.Queue[tuple[Callable[[Any], None], str] | None] = queue.Queue()
        self._client: Any = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._outage_since: float | None = None
        #: Calls done, calls that failed for good (with their error), seconds spent in retried outages.
        self.done = 0
        self.dropped: list[str] = []
        self.outage_seconds = 0.0
        _LIVE.add(self)

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.tracking_uri)
        return self._client

    @property
    def pending(self) -> int:
        return self._queue.unfinished_tasks

    def submit(self, call: Callable[[Any], None], what: str = "") -> None:
        """Queue ``call(client)``; returns at once."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="wlora-mlflow", daemon=True)
                self._thread.start()
        self._queue.put((call, what))

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._run(*item)
            finally:
                self._queue.task_done()

    def _run(self, call: Callable[[Any], None], what: str) -> None:
        attempt = 0
        while True:
            try:
                call(self.client)
            except Exception as e:  # sorted into permanent / retried below
                if is_permanent(e):
                    msg = f"MLflow {what or 'call'} failed: {str(e).splitlines()[0][:300]}"
                    logger.warning(msg)
                    self.dropped.append(msg)
                    return
                if self._outage_since is None:
                    self._outage_since = time.monotonic()
                    logger.warning(
                        "MLflow at %s is not answering (%s); training goes on and its metrics are kept "
                        "until it is back",
                        self.tracking_uri,
                        type(e).__name__,
                    )
                time.sleep(self.backoff_s[min(attempt, len(self.backoff_s) - 1)])
                attempt += 1
                continue
            if self._outage_since is not None:
                gone = time.monotonic() - self._outage_since
                self.outage_seconds += gone
                logger.warning("MLflow is back after %.0f s; %d queued calls follow", gone, self.pending - 1)
                self._outage_since = None
            self.done += 1
            return

    def flush(self, timeout_s: float | None = None, say: Callable[[str], None] | None = None) -> bool:
        """Wait until every queued call is done; False if ``timeout_s`` passed first. ``say`` hears a line
        every 30 s while it waits for an absent server."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        last_say = time.monotonic()
        while self.pending:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if say is not None and self._outage_since is not None and time.monotonic() - last_say >= 30:
                say(f"waiting for MLflow at {self.tracking_uri}: {self.pending} calls queued")
                last_say = time.monotonic()
            time.sleep(0.05)
        return True


def flush_all(timeout_s: float | None = None, say: Callable[[str], None] | None = None) -> int:
    """Flush every live queue of this process; returns the number of calls still pending (0: all done)."""
    for q in list(_LIVE):
        q.flush(timeout_s, say)
    return sum(q.pending for q in list(_LIVE))
