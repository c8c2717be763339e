"""Ctrl-C and SIGTERM during a sweep: the first stops the trials and lets Tune checkpoint the experiment (the
sweep is then marked interrupted and resumable), a second one stops at once."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from ray.tune import Callback

#: Exit status of an interrupted sweep (as a shell reports a process ended by SIGINT).
EXIT_INTERRUPTED = 130


class Interrupts(Callback):
    """Tells the driver whether Tune's run ended because of Ctrl-C or SIGTERM (Tune itself only logs it).

    Tune installs its SIGINT handler before the callbacks' ``setup``: this wraps it, so the first Ctrl-C
    (or SIGTERM, e.g. a preempted head node) still lets Tune stop the trials and checkpoint the experiment,
    and is recorded in :attr:`EVENT`. A second one reaches :func:`stop_now` (raises KeyboardInterrupt)."""

    EVENT = threading.Event()

    def setup(self, **info: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        tune_handler = signal.getsignal(signal.SIGINT)

        def first(sig: int, frame: Any) -> None:
            Interrupts.EVENT.set()
            print(
                "\nstopping: checkpointing the trials; the sweep will be resumable (press Ctrl-C again to stop now)",
                file=sys.stderr,
                flush=True,
            )
            signal.signal(signal.SIGTERM, stop_now)
            if callable(tune_handler):
                tune_handler(signal.SIGINT, frame)
            signal.signal(signal.SIGINT, stop_now)

        signal.signal(signal.SIGINT, first)
        signal.signal(signal.SIGTERM, first)


def stop_now(sig: int, frame: Any) -> None:
    Interrupts.EVENT.set()
    raise KeyboardInterrupt


def with_interrupts(tuner) -> None:
    """A restored tuner keeps the callbacks it was pickled with; add :class:`Interrupts` if it lacks one."""
    run_config = getattr(getattr(tuner, "_local_tuner", None), "_run_config", None)
    if run_config is not None and not any(isinstance(c, Interrupts) for c in run_config.callbacks or []):
        run_config.callbacks = [*(run_config.callbacks or []), Interrupts()]
