"""advmir: adversarial attacks and anomaly detection for music information retrieval."""

__version__ = "0.1.0"
