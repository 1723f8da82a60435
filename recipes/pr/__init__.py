"""Phoneme recognition: the PR recipes and ``python -m recipes.pr.align`` (forced alignments)."""
