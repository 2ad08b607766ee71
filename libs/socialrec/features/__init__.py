"""silver -> gold: behaviour sequences, temporal split, item text, social neighbours, text embeddings."""
