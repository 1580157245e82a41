"""A run directory's report: its frame, verdicts, statistics, plots and renderings."""
