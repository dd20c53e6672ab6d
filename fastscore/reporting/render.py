"""The reporting templates (``templates/``): one jinja2 environment renders the report page
and the explorer from context dataclasses, the ``Heading`` both open with and each one's
own; ``asset`` inlines a file of that folder verbatim (the explorer's script, which is not
a template)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib import resources
from typing import Any


@dataclass(frozen=True)
class Heading:
    """What the report and the explorer open with: the files, the rule, what it chose."""

    name: str  # the scores file's name
    scores: str
    input: str
    n: int  # records
    rule: str  # the budget, as typed: "top-k 20", "fraction 0.06", ...
    score: str
    order: str
    selected: int  # records the rule chose
    method: str  # what the selection ran, in words (selection.describe)


def render(template: str, *contexts: Any) -> str:
    """``template`` (a file of ``templates/``) filled with the fields of the dataclasses
    ``contexts``; values are HTML-escaped unless the template marks them safe."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("fastscore.reporting", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    values: dict[str, Any] = {}
    for context in contexts:
        for f in dataclasses.fields(context):
            assert f.name not in values, f"{f.name} is in two contexts of {template}"
            values[f.name] = getattr(context, f.name)
    return env.get_template(template).render(values)


def asset(name: str) -> str:
    """The text of ``templates/NAME`` as it is, for inlining (jinja2 would read ``{{`` in
    a script as its own)."""
    return (resources.files("fastscore.reporting") / "templates" / name).read_text("utf-8")
