"""Developer tools run as `python -m tests.tools.<name>` (the repository's top level is fixed)."""
