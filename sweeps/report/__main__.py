"""``python -m sweeps.report --tracking-uri URI --run-id PARENT_RUN_ID [--out DIR]`` (:mod:`sweeps.report.cli`)."""

from sweeps.report.cli import main

if __name__ == "__main__":
    main()
