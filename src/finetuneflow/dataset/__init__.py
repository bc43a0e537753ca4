"""Dataset step: chunks -> chat and text examples, split and written as JSONL (see build.py, io.py)."""
