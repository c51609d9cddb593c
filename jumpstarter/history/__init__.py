"""The lab's memory: every run's boards, outcomes, health checks and retries in one SQLite file, and what they say.

``store`` opens the file (safely, migrating its schema) and appends a run in one transaction; ``health`` reads
it back as a table per board and flags the boards that fail tests other boards pass; ``page`` draws that over
time as one HTML file. The pytest plugin writes runs (``pytest_jumpstarter.history``); ``jumpstarter health
FILE.db`` reads them.
"""

DEFAULT_DAYS = 30.0  # the window a report (and --jumpstarter-quarantine) reads: a repaired board is forgiven
