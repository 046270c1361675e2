"""Adapters behind the ports: stores, the Vertex HTTP client, auth, metrics, systemd, logs."""
