"""Tests of fastscore.selection: the ranking, budgets, coverage, the benchmark."""
