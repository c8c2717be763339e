"""Sweep layer, read as the flow: flags → plan → run (one pool of trial slots) → results.

``python sweeps/glue_sweep.py`` (see README "Running a sweep"); from Python::

    from sweeps.run import run_sweep
    from sweeps.glue_sweep import DEFAULTS, parser
    run_sweep(parser().parse_args([...]), DEFAULTS)
"""
