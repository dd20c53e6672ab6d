"""Tests of fastscore.engines: torch (packed, padded, single), vLLM, served, GPU."""
