"""Storage: the Spark session, Delta tables of the lake, and raw source files."""
