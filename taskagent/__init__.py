"""The fleet task agent: a small program that stays connected to the server and runs tasks.

It is installed and run on its own (``fleet-task-agent``) and imports nothing from Django. The
server imports two of its modules for itself: ``taskagent.protocol`` (the wire format, one
module for both ends) and ``taskagent.plugins`` (each plugin's settings schema and
``validate_settings``), and both use the standard library only.

Layout: ``protocol`` (messages), ``metrics`` (what a run produces), ``plugins`` (what a task
does), ``runner`` (when tasks run), ``publish`` and ``buffer`` (where metrics go, with nothing
acknowledged lost), ``connection`` (the WebSocket to the server), ``agent`` (ties them together)
and ``cli`` (the command). docs/task-agent-protocol.md describes the wire format.
"""

__version__ = "0.1.0"
