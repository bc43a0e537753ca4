"""FineTuneFlow: your material in, a fine-tuned model you run yourself out.

The public Python API lives in :mod:`finetuneflow.api` (one function per pipeline step).
Nothing heavy is imported here, so ``ftf --help`` answers at once.
"""

__version__ = "0.1.0"
