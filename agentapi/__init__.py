"""The agent-facing endpoints: osquery's remote TLS API and orbit's, served as Fleet serves them."""
