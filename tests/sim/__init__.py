"""Deterministic simulation of tuningd's exactly-once promise (seeded faults, crashes, checks)."""
