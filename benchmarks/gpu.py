"""GPU throughput benchmark: see fastscore/benchmarks/gpu.py for what it measures and how.

    python benchmarks/gpu.py --shape llama-1b --json-out benchmarks/results/gpu-1b.json
    python benchmarks/gpu.py --shape llama-8b --json-out benchmarks/results/gpu-8b.json --profile

Same as ``fastscore bench --gpu``. Prints a table, then one JSON line.
"""

import argparse
import sys

from fastscore.benchmarks import gpu as gpu_bench

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="fastscore GPU throughput benchmark")
    gpu_bench.add_cli_args(parser)
    gpu_bench.main(parser.parse_args(), sys.argv[1:])
