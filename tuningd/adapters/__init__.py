"""Adapters: the concrete stores, the Vertex client and the other ties to the outside world."""
