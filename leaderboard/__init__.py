"""Reads results.json files (nothing else) into the leaderboard: table, SUPERB score, report."""
from leaderboard.collect import collect
from leaderboard.score import DEFAULT_REFERENCES, Reference, leaderboard_table, superb_score

__all__ = ["collect", "DEFAULT_REFERENCES", "Reference", "leaderboard_table", "superb_score"]
