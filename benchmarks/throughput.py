"""Throughput benchmark: see fastscore/benchmarks/cpu.py for what it measures and how.

    python benchmarks/throughput.py --model llama60m --samples 150 --repeats 2
    python benchmarks/throughput.py --model demo --samples 2000 --repeats 3

Same as ``fastscore bench``. Prints a table, then one JSON line.
"""

import argparse

from fastscore.benchmarks import cpu as bench

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="fastscore throughput benchmark")
    bench.add_cli_args(parser)
    bench.main(parser.parse_args())
