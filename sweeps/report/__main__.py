"""``python -m sweeps.report --tracking-uri URI --run-id PARENT_RUN_ID [--out DIR]``."""

from sweeps.report.page import main

if __name__ == "__main__":
    main()
