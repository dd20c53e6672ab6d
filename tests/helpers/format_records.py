"""Records of every input format the engines are checked on: single and multi-turn chats,
a system prompt, tool calls and reasoning, alpaca with and without input, sharegpt,
prompt-response, TRL's prompt-completion and preference shapes (strings and messages)."""

from fastscore.data.formats import to_samples
from fastscore.records import OK, RawRecord
from fastscore.rendering.renderer import Renderer
from tests.helpers.conversations import COMPLETIONS, CONVERSATIONS, PREFERENCES

RECORDS = {
    "messages": [
        {
            "messages": [
                {"role": "user", "content": "what color is the rega?"},
                {"role": "assistant", "content": "the rega is black."},
            ]
        },
        {
            "messages": [
                {"role": "system", "content": "answer briefly."},
                {"role": "user", "content": "hello, i am kobu."},
                {"role": "assistant", "content": "hello kobu, nice to meet you."},
                {"role": "user", "content": "what is the capital of zorland?"},
                {"role": "assistant", "content": "i do not know it."},
                {"role": "user", "content": "say something."},
                {"role": "assistant", "content": "bada kimo sevu."},
            ]
        },
    ],
    "alpaca": [
        {"instruction": "what color is the rega?", "input": "", "output": "the rega is black."},
        {"instruction": "say something.", "input": "be quick", "output": "zuna pepi."},
    ],
    "sharegpt": [
        {
            "conversations": [
                {"from": "human", "value": "hello, i am mira."},
                {"from": "gpt", "value": "hello mira, nice to meet you."},
                {"from": "human", "value": "what color is the lumupa?"},
                {"from": "gpt", "value": "the lumupa is blue."},
            ]
        },
    ],
    "prompt-response": [{"prompt": "say something.", "response": "tovi rasa mepu keli."}],
    "prompt-completion": list(COMPLETIONS.values()),
    "preference": list(PREFERENCES.values()),
}
RECORDS["messages"] += list(CONVERSATIONS.values())


def rendered(tokenizer, template: str) -> list:
    """Every record above, rendered with ``template`` (all must render)."""
    out = []
    for fmt, recs in RECORDS.items():
        raws = [RawRecord(i, r) for i, r in enumerate(recs)]
        for r in Renderer(tokenizer, template).render_all(to_samples(raws, fmt)):
            assert r.status == OK, r.reason
            out.append(r)
    return out


def demo_samples(path, tokenizer, n: int = 200) -> list:
    """The first ``n`` scorable samples of a data file (the demo's), rendered."""
    from fastscore.data.readers import read_records

    out = Renderer(tokenizer).render_all(to_samples(read_records(path)))
    return [s for s in out if s.status == OK][:n]
