"""Tests of fastscore.rendering: masks, TRL parity, dates, the core install."""
