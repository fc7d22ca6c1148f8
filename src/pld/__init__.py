"""pld — Prompt-Level Distillation."""

__version__ = "0.1.0"
