"""Shipped presets (``*.yaml``, read by :func:`openseer.config.read_yaml`) and, in :mod:`.reference`, the
published values that the large-scale ones are checked against (docs/conformance.md)."""
