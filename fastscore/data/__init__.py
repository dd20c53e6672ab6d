"""Data in and out: input files read record by record (JSONL, JSON, Parquet, ``datasets``
directories, or a shard's range of one), each record in its format turned into a
conversation, repeated ids flagged; records and scores written back. ``RawRecord``
enters from a file, ``Sample`` leaves.
"""
