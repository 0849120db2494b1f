"""Shared state behind one setting each: files (``files.SharedFiles``: the state dir or object storage)
and control state (``state_db``: SQLite and file locks, or Postgres and advisory locks)."""
