"""Scoring: one session per run (tokenizer, renderer, format, models, engines), the stream
that chunks rendered samples through both engines and aggregates their logprobs, the
pure arithmetic of losses and scores, and the sinks that write scores lines and the
base's coverage features. ``RenderedSample`` enters, ``ScoredSample`` lines leave.
"""
