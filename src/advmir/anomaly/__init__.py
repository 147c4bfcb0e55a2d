"""Anomaly scoring: find faulty recordings in a note-level dataset (corrupt, detect, evaluate)."""
