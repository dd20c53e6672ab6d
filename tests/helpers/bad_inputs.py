"""A corpus of bad records: (kind, raw JSONL line, expected status, reason fragment).

Every line sits in one JSONL file after a good first record (which fixes the file's format
as ``messages``); the pipeline must give each its status and reason and go on.
"""

import orjson


def _m(*turns, **extra):
    return orjson.dumps({"messages": [{"role": r, "content": c} for r, c in turns], **extra})


GOOD = _m(("user", "what color is the rega?"), ("assistant", "the rega is black."), id="good")
GOOD_2 = _m(("user", "what color is the rega?"), ("assistant", "the rega is black."), id="good-2")

CORPUS = [
    ("malformed JSON", b'{"messages": [', "bad_record", "invalid JSON"),
    (
        "non-UTF-8 bytes",
        b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}',
        "bad_record",
        "invalid JSON",
    ),
    ("truncated line", GOOD[: len(GOOD) // 2], "bad_record", "invalid JSON"),
    ("a JSON array, not an object", b"[1, 2, 3]", "bad_record", "must be a JSON object"),
    ("null record", b"null", "bad_record", "must be a JSON object"),
    ("a bare string", b'"hello"', "bad_record", "must be a JSON object"),
    ("messages is a string", b'{"messages": "hi"}', "bad_record", "must be a list"),
    (
        "messages holds non-objects",
        b'{"messages": ["hi", "yo"]}',
        "bad_record",
        "must be an object with 'role' and 'content'",
    ),
    (
        "missing content",
        b'{"messages": [{"role": "user"}]}',
        "bad_record",
        "must be an object with 'role' and 'content'",
    ),
    ("content is a number", _m(("user", 5), ("assistant", "x")), "bad_record", "must be a string"),
    (
        "content parts with an image",
        orjson.dumps(
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
                    {"role": "assistant", "content": "x"},
                ]
            }
        ),
        "bad_record",
        "must be a string",
    ),
    ("unknown role", _m(("robot", "beep"), ("assistant", "x")), "bad_record", "role is 'robot'"),
    (
        "tools is not a list",
        orjson.dumps({"messages": [{"role": "user", "content": "a"}], "tools": {"x": 1}}),
        "bad_record",
        "'tools' must be a list",
    ),
    (
        "tools is a string but not JSON",
        orjson.dumps({"messages": [{"role": "user", "content": "a"}], "tools": "[{"}),
        "bad_record",
        "'tools' is a string but not JSON",
    ),
    (
        "chat_template_kwargs is not an object",
        orjson.dumps({"messages": [], "chat_template_kwargs": [1]}),
        "bad_record",
        "'chat_template_kwargs' must be an object",
    ),
    (
        "other format's fields",
        b'{"instruction": "x", "output": "y"}',
        "bad_record",
        "no 'messages' field",
    ),
    ("empty object", b"{}", "bad_record", "no 'messages' field"),
    ("no assistant turn", _m(("user", "hi")), "no_response", "no assistant turn"),
    ("system turn only", _m(("system", "be brief")), "no_response", "no assistant turn"),
    ("empty response", _m(("user", "hi"), ("assistant", "")), "no_response", "no assistant turn"),
    (
        "whitespace-only response",
        _m(("user", "hi"), ("assistant", " \n\t ")),
        "no_response",
        "no assistant turn",
    ),
    (
        "a reply with null content and no tool calls",
        orjson.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant"}]}),
        "bad_record",
        "must be an object with 'role' and 'content'",
    ),
    (
        "longer than the context",
        _m(("user", "hello " * 400), ("assistant", "ok")),
        "too_long",
        "> max_length",
    ),
    ("the id of an earlier record", GOOD, "duplicate_id", "is already record 0's"),
    (
        "a huge single line (2 MB)",
        _m(("user", "x" * 2_000_000), ("assistant", "ok")),
        "too_long",
        "> max_length",
    ),
]
