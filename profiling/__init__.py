"""Memory and throughput measurement. Imports nothing of ours: it works on plain numbers and files."""

from profiling.measure import PeakMemorySampler, measure

__all__ = ["PeakMemorySampler", "measure"]
