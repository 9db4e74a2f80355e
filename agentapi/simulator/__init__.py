"""A simulator of osquery agents that speaks the real TLS remote protocol to this server.

Why: load tests and end-to-end tests need many agents that behave like osquery *exactly* (drop
the key on ``node_invalid: true``, treat any ``error`` key as failure and re-send, honour
``discovery`` and ``accelerate``, buffer logs while the server fails), without installing
osquery. It mirrors Fleet's osquery-perf: stable identities from ``(seed, index)``, OS templates
with realistic vitals, answers to Fleet's detail queries, scheduled-query result logs.

Modules: ``identity`` (who a host is), ``tables``/``sql``/``detail`` (what it answers),
``protocol`` (how osquery reads a response), ``logs`` (log lines and their buffer),
``schedule`` (scheduled queries from the config), ``transport`` (HTTP), ``agent`` (one agent's
loops), ``stats`` and ``runner`` (many agents in one asyncio process).
"""
