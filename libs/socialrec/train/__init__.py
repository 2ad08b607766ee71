"""Distributed training of the recommender with Ray Train, fed from gold.train_examples by petastorm."""
