"""Saved queries (filled in by the saved-queries issue)."""
