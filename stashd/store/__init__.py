"""Backends: where entries live (memory; SQLite and Redis follow the same interface)."""
