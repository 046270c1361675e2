"""Vertex's tuningJobs wire: schema, codec, validation, filters and paging (no daemon states)."""
