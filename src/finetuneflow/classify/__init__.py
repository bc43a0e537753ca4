"""Sequence classification: LoRA plus a trained head on a labelled CSV (:func:`.step.train`)."""
