#!/usr/bin/env python
"""Train or evaluate a downstream task on a frozen upstream. See ``python run_downstream.py -h``."""
import sys

from downstream.cli import main

if __name__ == "__main__":
    sys.exit(main())
