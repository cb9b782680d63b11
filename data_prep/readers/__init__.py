"""Readers for the raw public layouts. Each returns ``(records, skips)`` for one dataset root."""

from data_prep.readers.acdc import read_acdc
from data_prep.readers.mnms import read_mnms
from data_prep.readers.mnms2 import read_mnms2

__all__ = ["read_acdc", "read_mnms", "read_mnms2"]
