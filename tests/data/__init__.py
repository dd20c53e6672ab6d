"""Tests of fastscore.data: readers, formats, ids, writers."""
