"""Anomaly scores, Gaussian-process active learning and the ratings store (later issues)."""
