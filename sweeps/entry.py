"""What a sweep entry script (``sweeps/<kind>_sweep.py``) is made of: its parser and its ``main``. Only ``main``
imports the sweep machinery (Ray, MLflow, torch), after the flags are parsed, so ``--help`` answers at once."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from sweeps.flags import SweepDefaults, build_parser


def entry_points(
    defaults: SweepDefaults, doc: str | None
) -> tuple[Callable[[], argparse.ArgumentParser], Callable[..., int]]:
    """``(parser, main)``: the script's parser (help: its docstring's first line) and ``main(argv=None)``,
    which returns the exit code."""
    description = (doc or "").strip().splitlines()[0] if doc else ""

    def parser() -> argparse.ArgumentParser:
        return build_parser(defaults, description)

    def entry(argv: Sequence[str] | None = None) -> int:
        p = parser()
        args = p.parse_args(argv)  # --help and flag errors end here, before the sweep machinery loads
        if getattr(args, "forecast", None) is not None:  # the forecast needs neither Tune nor MLflow
            from sweeps.forecast import main as forecast_main

            return forecast_main(defaults, args, p)
        from sweeps.run import main

        return main(defaults, args=args, parser=p)

    return parser, entry
