"""The four phases of Prompt-Level Distillation, each a plain function over plain data."""
