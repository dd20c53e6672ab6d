"""Tests of fastscore.executors: Ray shards on a real local cluster."""
