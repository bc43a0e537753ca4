"""Ingest step: files -> cleaned records -> token chunks with provenance (see step.py)."""
