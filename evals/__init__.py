"""Benchmarks (MT-Bench, AlpacaEval) and judges; they register through the ``harness.benchmarks`` and
``harness.judges`` entry point groups and import from ``harness``, never the other way round."""
