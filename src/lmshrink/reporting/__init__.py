"""Reporting: the end-of-run report of distill, the tables, plots and model cards of report,
and what a person reads while a command runs (progress, info lines, the run's log)."""
