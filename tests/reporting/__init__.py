"""Tests of fastscore.reporting: the page in a real browser, inspect."""
