"""Duplicate ids: the first record with an id is scored, later ones name it."""

from __future__ import annotations

import random

from fastscore.data.ids import IdRegistry, duplicate_records, flag_duplicate_ids
from fastscore.records import BAD_RECORD, DUPLICATE_ID, OK, Sample


def test_registry_finds_the_first_index_across_merges():
    reg = IdRegistry(min_merge=64)  # many merges of the recent part into the sorted part
    rng = random.Random(0)
    ids = [rng.choice([f"s{rng.randrange(3000)}", rng.randrange(3000)]) for _ in range(5000)]
    first: dict = {}
    for i, rid in enumerate(ids):
        key = (type(rid), rid)
        assert reg.first(rid, i) == first.get(key)
        first.setdefault(key, i)
    assert len(reg) == len(first)


def test_ids_compare_as_json():
    reg = IdRegistry()
    assert reg.first("3", 0) is None
    assert reg.first(3, 1) is None  # the string "3" and the number 3 are different ids
    assert reg.first({"a": 1, "b": 2}, 2) is None
    assert reg.first({"b": 2, "a": 1}, 3) == 2  # key order does not make another id
    assert reg.first(3, 4) == 1


def test_flag_marks_later_duplicates_and_ignores_bad_records():
    samples = [
        Sample(0, "a"),
        Sample(1, "a", status=BAD_RECORD, reason="x"),  # an unreadable record's id is not used
        Sample(2, "b"),
        Sample(3, "a"),
        Sample(4, "b", status="no_response"),  # parsed, so its id counts
    ]
    got = list(flag_duplicate_ids(samples, IdRegistry()))
    assert [s.status for s in got] == [OK, BAD_RECORD, OK, DUPLICATE_ID, DUPLICATE_ID]
    assert got[3].reason.startswith('id "a" is already record 0\'s')
    assert got[4].reason.startswith('id "b" is already record 2\'s')


def test_whole_file_pass_agrees_with_the_stream(tmp_path):
    lines = [
        b'{"id": "x", "prompt": "p", "response": "r"}',
        b"{not json",
        b'{"id": "x", "prompt": "p", "response": "r"}',
        b'{"prompt": "p", "response": "r"}',  # no id: known by its position, 3
        b'{"id": 3, "prompt": "p", "response": "r"}',  # not the position's: a namespace apart
        b'{"id": 3, "prompt": "p", "response": "r"}',
        b'{"id": null, "prompt": "p", "response": "r"}',  # a null id is no id
        b'{"id": null, "prompt": "p", "response": "r"}',
    ]
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert duplicate_records(path, "jsonl", "prompt-response") == {2: 0, 5: 4}
