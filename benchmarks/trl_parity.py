"""The parity table: for every chat template pair TRL ships, how many of the test
conversations fastscore renders to TRL's token ids and loss mask, under the rule it
picks (``trl``) and under the fallback (``sentinel``, as without TRL installed).

    python benchmarks/trl_parity.py

Needs ``trl`` and the demo tokenizer (built on first use). The conversations and TRL's
side are those of ``tests/rendering/test_trl_parity.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    from unittest import mock

    import fastscore.rendering.renderer as render
    from fastscore.data.formats import to_sample
    from fastscore.demodata.build import ensure_demo
    from fastscore.engines.models import load_tokenizer
    from fastscore.records import RawRecord
    from fastscore.rendering.renderer import Renderer
    from tests.helpers.conversations import (
        COMPLETIONS,
        CONVERSATIONS,
        FIXED_DATE,
        as_multimodal,
        mismatch,
        parity_tokenizer,
        trl_sft,
        trl_template_pairs,
    )

    tok = parity_tokenizer(load_tokenizer(ensure_demo().base))
    records = {k: v for k, v in {**CONVERSATIONS, **COMPLETIONS}.items() if k != "completion_text"}
    rows = []
    print(f"{'template':<24}{'records':>8}{'same (trl)':>12}{'same (fallback)':>17}  differs")
    for family, original, training in trl_template_pairs():
        tok.chat_template = original
        same = {}
        differs = []
        for rule in ("trl", "sentinel"):
            with mock.patch.object(
                render,
                "trl_training_variant",
                render.trl_training_variant if rule == "trl" else lambda t, s: None,
            ):
                renderer = Renderer(tok, date=FIXED_DATE)
            n = 0
            for name, record in records.items():
                fmt = "messages" if "messages" in record else "prompt-completion"
                (got,) = renderer.render_sides(to_sample(RawRecord(0, record), fmt))
                ref = as_multimodal(record) if renderer.content_parts else record
                why = mismatch(got, trl_sft(tok, ref, training))
                n += why is None
                if why and rule == "sentinel":
                    differs.append(name)
            same[rule] = n
        rows.append({"template": family, "records": len(records), **same})
        print(
            f"{family:<24}{len(records):>8}{same['trl']:>12}{same['sentinel']:>17}  "
            + ", ".join(differs)
        )
    total = {k: sum(r[k] for r in rows) for k in ("records", "trl", "sentinel")}
    print(f"{'all':<24}{total['records']:>8}{total['trl']:>12}{total['sentinel']:>17}")
    print(json.dumps({"rows": rows, "total": total}))


if __name__ == "__main__":
    main()
