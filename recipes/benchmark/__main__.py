"""``python -m recipes.benchmark``: see :mod:`recipes.benchmark.run`."""
import sys

from recipes.benchmark.run import main

sys.exit(main())
