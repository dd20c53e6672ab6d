"""Benchmarks (``fastscore bench``): one set of ways to score, for CPU and GPU (``ways``),
the model shapes (``shapes``), the exact-scoring FLOP count (``flops``), and the CPU
(``cpu``) and GPU (``gpu``) drivers that time them side by side and print a table and a
JSON line.
"""
