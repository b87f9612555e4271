#!/usr/bin/env python3
"""Runs the chart checks: the code is the chart_check package next to this file (scripts/chart_check/, see its
docstring). scripts/chart-check.sh is the usual entry point (it makes the venv, then `python -m chart_check`);
this file keeps `python3 scripts/chart_check.py` working inside that venv."""

import sys

from chart_check.__main__ import main  # scripts/ is sys.path[0] when this file runs

if __name__ == "__main__":
    sys.exit(main())
