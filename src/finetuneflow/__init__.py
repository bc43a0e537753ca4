"""FineTuneFlow: your material in, a fine-tuned model you run yourself out.

The public Python API lives in :mod:`finetuneflow.api` (one function per pipeline step).
Nothing heavy is imported here, so ``ftf --help`` answers at once.
"""

__version__ = "0.1.0"

import logging as _logging

# bitsandbytes (the qlora extra) logs on import, wherever peft imports it, that an optional CPU
# kernel package is missing; that says nothing to a user. Setting a level imports nothing.
_logging.getLogger("bitsandbytes").setLevel(_logging.ERROR)
