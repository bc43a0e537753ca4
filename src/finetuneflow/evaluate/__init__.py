"""Evaluation step: base vs tuned, scored on answers to questions (see step.py)."""
