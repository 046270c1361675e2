"""tuningd: a queueing, crash-safe daemon for Vertex AI supervised tuning jobs."""

__version__ = "0.1.0"
