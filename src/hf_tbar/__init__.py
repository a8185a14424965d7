"""hf_tbar: remove backdoors from CLIP models by trigger-vector arithmetic (TBAR)."""

__version__ = "0.1.0"
