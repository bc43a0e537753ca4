"""Export step: adapter, merged weights and the run report (see export.py, report.py)."""
