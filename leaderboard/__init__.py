"""Collects results.json files into a leaderboard table; reads nothing else."""
from leaderboard.collect import collect, summarise, write_leaderboard

__all__ = ["collect", "summarise", "write_leaderboard"]
