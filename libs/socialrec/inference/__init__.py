"""Batch scoring of every user at cluster scale."""
