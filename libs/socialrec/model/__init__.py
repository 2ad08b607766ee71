"""The sequence recommender: a causal transformer over behaviour, item text, context and friends."""
