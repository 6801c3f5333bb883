"""Alignment methods as plugins. Each registers through the ``harness.methods`` entry point group."""
