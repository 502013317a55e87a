"""Reporting: the end-of-run report of distill, and the tables, plots and model cards of report."""
