"""Anonymous usage statistics, as Fleet sends them: opt-out, once a day, nothing identifying.

``statistics.build()`` makes the payload from a few aggregate queries; ``sending.send()`` decides
whether one is due and POSTs it, never raising; ``tasks`` schedules it (Celery beat, or a daemon
thread on the embedded default); ``console`` adds the switch and the status to the Fleet settings
page; ``manage.py usage_stats`` prints or sends it. See docs/usage-statistics.md.
"""
