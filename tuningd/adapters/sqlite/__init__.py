"""The SQLite job store (aiosqlite): files, schema, group commit, reads, tools."""
