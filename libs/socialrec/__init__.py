"""socialrec: social, text-aware sequence recommendations as Spark + Delta + Ray jobs."""

__version__ = "0.1.0"
