"""Raw -> bronze -> silver: the synthetic source, ingestion and cleaning."""
