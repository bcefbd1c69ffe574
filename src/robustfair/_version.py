"""The package version, in a module of its own so that any room can read it without importing
the root package (which would load every room)."""
__version__ = "0.1.0"
