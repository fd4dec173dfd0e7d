"""The SQLite driver: the embedded default, one file, WAL, serialized writers."""
