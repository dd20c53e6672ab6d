"""Tests of fastscore.scoring: the arithmetic, the stream, scores across engines."""
