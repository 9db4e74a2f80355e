"""Packs, scheduled queries, the osquery config and the agents' logs."""
