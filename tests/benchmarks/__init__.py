"""Tests of fastscore.benchmarks: each way runs, the FLOP count."""
