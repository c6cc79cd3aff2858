"""Shipped presets (``*.yaml``, read by :func:`openseer.config.read_yaml`). The published values that the
large-scale ones are checked against live with the tests (``tests/support/reference.py``, docs/conformance.md)."""
