"""Errors fastscore raises on purpose. Each message says what is wrong and what to do."""


class FastscoreError(Exception):
    """Base class: the CLI prints these as one line, without a traceback."""


class InputError(FastscoreError):
    """The input file or a record in it cannot be used."""


class ConfigError(FastscoreError):
    """An option or config file is wrong."""


class ModelError(FastscoreError):
    """A model or tokenizer cannot be used (missing, mismatched, unsupported)."""


class EngineError(FastscoreError):
    """The inference engine failed or returned something unusable."""
