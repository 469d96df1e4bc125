"""Entry point: ``python -m recipe.atesd.report METRICS [--ckpt DIR] --out DIR``, the run report of
recipe/atesd/tools/report.py (plots + report.md for any run's metrics history)."""

from recipe.atesd.tools.report import main

if __name__ == "__main__":
    main()
