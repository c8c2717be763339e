"""Sweep layer: search spaces, Tuner/searcher/scheduler/MLflow wiring, entry scripts, tables.

``python sweeps/glue_sweep.py`` (see README "Running a sweep"); from Python::

    from sweeps.common import run_sweep
    from sweeps.glue_sweep import DEFAULTS, parser
    run_sweep(parser().parse_args([...]), DEFAULTS)
"""
