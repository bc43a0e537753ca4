"""The studio's pages: the dashboard and the wizard steps, rendered on the server (``pages.py``) from
the state (``views.py``, ``steps.py``), with the wizard's own choices per project (``settings.py``)."""
