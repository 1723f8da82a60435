"""Recipes: YAML configs per task and corpus, and the one-command demo (``python -m recipes.demo``)."""
