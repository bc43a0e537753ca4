"""Pydantic v2 request and response bodies, one module per resource: ``...Create`` / ``...Update``
for what a client sends (unknown fields refused), ``...Public`` for what it gets back. Step
settings travel as plain dicts and are checked by the step's own config class (``from_dict``), so
the API never restates a config's fields or defaults."""
