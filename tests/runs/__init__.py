"""Tests of fastscore.runs: resume, fingerprints, what a rerun keeps."""
