"""Evaluation step: base vs tuned on held-out examples (see evaluate.py)."""
