"""How often a run asks the store about its input: the S3 requests that name the input's
object during a ``score`` and a ``select`` after it, by kind, with the input, the scores
and the subset in a bucket of an S3-compatible server on loopback (moto) and the demo
models on the torch engine.

A HEAD is a look at the object (its size and ETag: what ``--resume`` compares, or the
check s3fs makes as each read opens it); a GET is a read of its bytes.

    python benchmarks/input_requests.py --records 40

Prints the counts and one JSON line last (``--json-out`` writes it too).
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.helpers: the server

import fastscore  # noqa: E402
from fastscore.benchmarks.ways import write_json  # noqa: E402
from fastscore.demodata.build import ensure_demo  # noqa: E402
from tests.helpers.s3 import MotoServer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=40, help="demo chats in the input")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()

    import s3fs

    assets = ensure_demo()
    lines = assets.data.read_bytes().splitlines(keepends=True)[: args.records]
    server = MotoServer()
    os.environ.update(server.env())
    bucket = server.new_bucket()
    server.fs().pipe_file(f"{bucket}/d.jsonl", b"".join(lines))

    asked: collections.Counter = collections.Counter()
    call = s3fs.S3FileSystem._call_s3

    async def counted(self, method, *a, **kw):  # every request s3fs makes goes here
        if kw.get("Bucket") == bucket and kw.get("Key") == "d.jsonl":
            asked[method] += 1
        return await call(self, method, *a, **kw)

    s3fs.S3FileSystem._call_s3 = counted
    url = f"s3://{bucket}"
    summary = {"records": len(lines)}
    try:
        fastscore.score(input=f"{url}/d.jsonl", base=str(assets.base), ref=str(assets.ref),
                        output=f"{url}/out/s.jsonl", progress=False)  # fmt: skip
        summary["score"] = dict(asked)
        asked.clear()
        fastscore.select(scores=f"{url}/out/s.jsonl", input=f"{url}/d.jsonl",
                         output=f"{url}/out/sel.jsonl", fraction=0.5)  # fmt: skip
        summary["select"] = dict(asked)
    finally:
        s3fs.S3FileSystem._call_s3 = call
        server.stop()
    for step in ("score", "select"):
        print(f"{step}: " + ", ".join(f"{k} {v}" for k, v in sorted(summary[step].items())))
    write_json(summary, args.json_out)


if __name__ == "__main__":
    main()
