"""Memory and throughput measurement, and an analytic memory estimator. Imports nothing of ours: it works
on plain numbers and files."""

from profiling.measure import PeakMemorySampler, measure
from profiling.throughput import stage_throughput

__all__ = ["PeakMemorySampler", "measure", "stage_throughput"]
