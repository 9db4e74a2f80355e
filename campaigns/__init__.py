"""Live-query campaigns (filled in by the live-queries issue)."""
