"""What a run's state means for people: Fleet's user messages, shown by REST, the console and the command.

Fleet returns these as ``message`` beside a result (``HostScriptResult.UserMessage``) so that a
client can explain an exit code without knowing Fleet's conventions: ``-1`` is the host's
timeout, ``-2`` scripts disabled on the host, no exit code yet a pending run. The wording here is
ours; the cases are Fleet's.
"""

from __future__ import annotations

from hostscripts.models import EXIT_DISABLED, EXIT_TIMEOUT, ScriptRun

PENDING = "Script is running or will run when the host comes online."
CANCELLED = "The run was cancelled before the host ran it."
DISABLED_ON_HOST = "Scripts are disabled for this host. To run scripts, deploy fleetd with scripts enabled."


def host_timeout(seconds: float) -> str:
    """The synchronous run's answer when the host did not report within the wait."""
    return (
        f"Fleet didn't hear back from the host within {_duration(seconds)}. It doesn't know whether "
        "the script ran because no result arrived; the result will show under the host's scripts "
        "if the host reports it later."
    )


def script_timeout(seconds: int) -> str:
    return f"Timeout. Fleet stopped the script after {seconds} seconds to protect host performance."


def result_message(run: ScriptRun, *, timed_out_waiting: float | None = None) -> str:
    """The message for a run in its current state; ``timed_out_waiting``: the sync wait ran out."""
    if timed_out_waiting is not None and run.exit_code is None and not run.cancelled:
        return host_timeout(timed_out_waiting)
    if run.cancelled:
        return CANCELLED
    if run.exit_code is None:
        return PENDING
    if run.exit_code == EXIT_TIMEOUT:
        return script_timeout(run.timeout)
    if run.exit_code == EXIT_DISABLED:
        return DISABLED_ON_HOST
    return ""


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 60 and seconds % 60 == 0:
        minutes = seconds // 60
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"
