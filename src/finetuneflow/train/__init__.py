"""Training: LoRA fine-tuning on packed rows (see :func:`finetuneflow.train.step.train`)."""
