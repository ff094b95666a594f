"""The rules engine: stored readings → decisions (docs/rules.md)."""
