"""Runs: where a run's files go, the manifest and the ordered final write, what
``--resume`` and Ray shards compare, the counters and timers. Stats and paths enter,
``scores.jsonl`` and its manifest leave.
"""
