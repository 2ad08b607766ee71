"""Data-quality gates: declarative expectation suites per table, validated with Great Expectations."""
