"""Evaluation step: base vs tuned on the eval split of the run's dataset (see step.py)."""
