"""Rendering: a ``Sample`` rendered by the chat template and tokenized once, with the
positions SFT trains on (the template's rule: its markers, TRL's training variant, or
the fallback). ``Sample`` enters, ``RenderedSample`` leaves.
"""
