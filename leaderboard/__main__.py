"""``python -m leaderboard RESULTS_ROOT``: write the leaderboard CSV and print the table."""
import sys

from leaderboard.collect import main

sys.exit(main())
