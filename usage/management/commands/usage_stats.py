"""``manage.py usage_stats``: whether anonymous usage statistics are sent, what, and send them now.

manage.py usage_stats            # on or off, the endpoint, the last send and error
manage.py usage_stats --print    # exactly the JSON that would be sent (stdout; the state on stderr)
manage.py usage_stats --send     # send now, whatever the last send (when they are on)
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from usage import sending, statistics
from usage.models import UsageStatistics


class Command(BaseCommand):
    help = "Show, print (--print) or send now (--send) the anonymous usage statistics."

    def add_arguments(self, parser: Any) -> None:
        group = parser.add_mutually_exclusive_group()
        group.add_argument(
            "--print", action="store_true", help="Print the JSON that would be sent (nothing is sent)."
        )
        group.add_argument("--send", action="store_true", help="Send the statistics now.")

    def handle(self, *args: Any, **options: Any) -> None:
        on, why = sending.state()
        if options["print"]:
            self.stdout.write(json.dumps(statistics.build(), indent=2))
            self.stderr.write(f"Usage statistics are {why}.")
            return
        if options["send"]:
            if not on:
                raise CommandError(f"not sent: usage statistics are {why}.")
            outcome = sending.send(force=True)
            if not outcome.sent:
                raise CommandError(f"not sent: {outcome.error or outcome.result}")
            self.stdout.write(f"Sent to {sending.display_url(sending.endpoint())}.")
            return
        row = UsageStatistics.load()
        self.stdout.write(f"Usage statistics are {why}.")
        self.stdout.write(f"Last sent: {row.last_sent_at.isoformat() if row.last_sent_at else 'never'}")
        if row.last_error:
            self.stdout.write(f"Last error ({row.last_error_at:%Y-%m-%d %H:%M:%S} UTC): {row.last_error}")
        self.stdout.write("`manage.py usage_stats --print` shows exactly what is sent.")
