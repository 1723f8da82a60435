"""Query-by-example spoken term detection (SUPERB's QbE): training-free search with subsequence DTW over one
upstream layer at a time (``python -m downstream.qbe``; docs/qbe.md).

``dtw``: local distances and vectorised subsequence DTW; ``metrics``: ATWV/MTWV, MAP, P@k; ``queries``: terms,
their spoken examples and ground truth from a transcribed corpus; ``run``: the protocol end to end, one
``results.json`` the leaderboard reads, on that corpus or (``corpus: quesst14 | sws2013``) on a MediaEval
corpus as released (:mod:`corpora.quesst`).
"""
