"""The coordinator's internal storage formats (generated)."""
