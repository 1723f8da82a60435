"""Recipes: YAML configs per task and corpus (``recipes/<task>/*.yaml``), the benchmark that runs
every track on every upstream (``python -m recipes.benchmark``, the README's main command) and the
low-resource ASR recipe (``python -m recipes.asr.low_resource``)."""
