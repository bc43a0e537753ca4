"""``python -m finetuneflow.cli``: the same as ``ftf``."""

from finetuneflow.cli import main

if __name__ == "__main__":
    main()
