"""Toy world: modular-sum problems, a tiny word-level tokenizer and its data, for CPU-sized self-distillation."""
