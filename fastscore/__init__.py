"""fastscore: pick the most learnable SFT samples for a base model (LoBaSS / DavIR)."""

__version__ = "0.1.0"
