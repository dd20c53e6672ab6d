"""Executors: where a run's records are scored. ``base`` is the step both share (a range of
records streamed through a session into a partial scores file); ``local`` runs it once
over the input (``score``, ``--dry-run``), ``ray_shards`` once per shard on Ray workers
and merges. A config enters, a manifest and a scores file leave.
"""
