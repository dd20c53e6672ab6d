"""A run on a multi-node Ray cluster on this machine whose busy node is removed mid-shard
(``python tests/helpers/ray_nodes.py DATA OUT BASE REF``): prints the manifest and the
removed attempt as JSON. Run by tests/executors/test_ray.py in a new interpreter."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import orjson

import fastscore
from fastscore.config import EngineConfig, RayConfig


def first_attempt(shards_dir: Path, *, flushed_over: int = -1) -> dict | None:
    """A shard's first attempt (its record, the file's name as ``shard``, the bytes it has
    flushed) once it has flushed more than ``flushed_over`` bytes; None while none has."""
    for att in sorted(shards_dir.glob("shard-*.attempt.json")):
        with contextlib.suppress(OSError, ValueError):
            a = orjson.loads(att.read_bytes())
            partial = att.with_name(att.name.replace(".attempt.json", ".jsonl.partial"))
            flushed = partial.stat().st_size if partial.exists() else 0
            if a["attempt"] == 1 and flushed > flushed_over:
                return {**a, "shard": att.name, "flushed": flushed}
    return None


@contextlib.contextmanager
def killing_first(find, poll: float = 0.01):
    """While the block runs, SIGKILL the worker of the first attempt ``find()`` returns
    (as a preemption or an OOM kill would); yields the list of attempts killed."""
    kills, stop = [], threading.Event()

    def kill() -> None:
        while not stop.is_set():
            a = find()
            if a is not None:
                os.kill(a["pid"], signal.SIGKILL)
                kills.append(a)
                return
            time.sleep(poll)

    t = threading.Thread(target=kill, daemon=True)
    t.start()
    try:
        yield kills
    finally:
        stop.set()
        t.join()


def remove_a_busy_node(c, nodes, shards_dir: Path, removed: list, stop: threading.Event):
    while not stop.is_set():
        a = first_attempt(shards_dir, flushed_over=3000)
        if a is not None:
            node = next(n for n in nodes if n.node_id == a["ray_node"])
            c.remove_node(node, allow_graceful=False)  # its raylet, store, ...
            # ... and its worker, which a lost machine takes with it (here it could outlive
            # its raylet and still hand its shard back)
            with contextlib.suppress(ProcessLookupError):
                os.kill(a["pid"], signal.SIGKILL)
            removed.append(a)
            return
        time.sleep(0.01)


def main(data: str, out: str, base: str, ref: str) -> None:
    import ray
    from ray.cluster_utils import Cluster

    # a head without CPUs and three one-CPU nodes: two workers leave one node spare
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        nodes = [c.add_node(num_cpus=1) for _ in range(3)]
        c.wait_for_nodes()
        c.connect()
        removed, stop = [], threading.Event()
        args = (c, nodes, Path(out + ".shards"), removed, stop)
        t = threading.Thread(target=remove_a_busy_node, args=args, daemon=True)
        t.start()
        try:
            m = fastscore.score(input=data, output=out, base=base, ref=ref, progress=False,
                                executor="ray", batch_tokens=300,
                                engine=EngineConfig(kind="torch", dtype="float32"),
                                ray=RayConfig(workers=2, shards=8))  # fmt: skip
        finally:
            stop.set()
            t.join()
        print(json.dumps({"removed": removed, "manifest": m}))
    finally:
        ray.shutdown()
        c.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:5])
