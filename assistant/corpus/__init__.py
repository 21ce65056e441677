"""The corpus layer: documents read and converted (ingest), importers, chunking and the corpus definition."""
