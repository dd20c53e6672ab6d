"""fastscore.runs.outputs: every file a run writes beside its scores, by name."""

from __future__ import annotations

from pathlib import Path

from fastscore.runs.outputs import OutputPaths, partial_of


def test_the_files_beside_a_scores_file():
    p = OutputPaths.of("out/scores.jsonl")
    assert p.scores == Path("out/scores.jsonl")
    assert p.manifest == Path("out/scores.manifest.json")
    assert p.partial == Path("out/scores.jsonl.partial") == partial_of("out/scores.jsonl")
    assert p.run_record == Path("out/scores.jsonl.run.json")
    assert p.shards == Path("out/scores.jsonl.shards")
    assert p.features == Path("out/scores.features.npy")
    assert p.shard(7) == (
        Path("out/scores.jsonl.shards/shard-00007.jsonl"),
        Path("out/scores.jsonl.shards/shard-00007.done.json"),
    )
    assert OutputPaths.of("s.parquet", "run/manifest.json").manifest == Path("run/manifest.json")


def test_a_scores_files_manifest_is_found_beside_it_or_in_its_run_directory(tmp_path):
    scores = tmp_path / "scores.jsonl"
    assert OutputPaths.find_manifest(scores) is None
    (tmp_path / "manifest.json").write_text("{}")  # a `fastscore run` directory
    assert OutputPaths.find_manifest(scores) == tmp_path / "manifest.json"
    own = tmp_path / "scores.manifest.json"
    own.write_text("{}")
    assert OutputPaths.find_manifest(scores) == own  # its own first
    assert OutputPaths.find_manifest(partial_of(scores)) == own  # and from its partial
