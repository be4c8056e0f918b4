"""Executors run many evaluations at once and yield (candidate id, record) as each finishes."""
