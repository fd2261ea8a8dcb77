"""coffer: enterprise backup on restic-format repositories, with plans, drills and reports."""

__version__ = "0.1.0"
