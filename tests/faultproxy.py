"""A TCP proxy on 127.0.0.1 that can take the service behind it down, or make it hang.

Outage tests put it between the server and MariaDB or Redis, so the server meets real
connection failures and real silence, through its real drivers:

- ``up()``: bytes flow both ways.
- ``down()``: open connections are reset and new ones are closed at once (a crashed service).
- ``hang()``: connections are accepted and requests read, but nothing comes back (a stuck
  service, or a network that drops packets): only the client's timeouts can end the wait.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode = "up"
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept_loop, name="faultproxy-accept", daemon=True).start()

    # --- control -----------------------------------------------------------------------------
    def up(self) -> None:
        self.mode = "up"

    def hang(self) -> None:
        self.mode = "hang"

    def down(self) -> None:
        self.mode = "down"
        self._reset_all()

    def close(self) -> None:
        self._closed = True
        self._reset_all()
        with contextlib.suppress(OSError):
            self._listener.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing ----------------------------------------------------------------------------
    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _reset_all(self) -> None:
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.mode == "down":
                client.close()
                continue
            self._track(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        self._track(upstream)
        threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
        self._pump(upstream, client)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        """Copy ``source`` to ``sink``; while hanging, read and drop (the peer hears nothing)."""
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if self.mode == "up":
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.close()
