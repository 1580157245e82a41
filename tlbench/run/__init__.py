"""Running cells: the runner, executors, worker processes, one cell's execution, progress."""
