"""The one-command benchmark (``python -m recipes.benchmark``); see :mod:`recipes.benchmark.run`."""
