"""Data loading: every source becomes the internal records of ``records.py`` through ``load_records``."""

from harness.data.readers import Records, load_records, read_hh_rlhf, read_internal, read_oasst, read_webgpt
from harness.data.records import DataError

__all__ = ["DataError", "Records", "load_records", "read_hh_rlhf", "read_internal", "read_oasst", "read_webgpt"]
