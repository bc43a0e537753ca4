"""Jobs: every step invocation is recorded in the ``jobs`` table (the web worker will reuse this)."""
