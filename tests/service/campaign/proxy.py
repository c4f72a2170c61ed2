"""A TCP balancer in a thread: what a Kubernetes Service is to the API replicas.

Each connection goes to the next backend (round robin) that accepts it; a dead replica
refuses connections, so its share moves to the live ones. Drivers are given the balancer's
URL, so their events reach whichever replica is alive.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Sequence


class Balancer:
    def __init__(self, backends: Sequence[int], port: int) -> None:
        self.backends = list(backends)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.connections = 0
        self._next = 0
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", port))
        self._listener.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept, name="balancer", daemon=True)

    def __enter__(self) -> Balancer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._forward, args=(client,), daemon=True).start()

    def _connect(self) -> socket.socket | None:
        start, self._next = self._next, self._next + 1
        for i in range(len(self.backends)):
            port = self.backends[(start + i) % len(self.backends)]
            with contextlib.suppress(OSError):
                return socket.create_connection(("127.0.0.1", port), timeout=2)
        return None

    def _forward(self, client: socket.socket) -> None:
        backend = self._connect()
        if backend is None:
            client.close()
            return
        backend.settimeout(None)
        peers = {client: backend, backend: client}
        open_ends = {client, backend}
        try:
            while open_ends and not self._stop.is_set():
                readable, _, _ = select.select(list(open_ends), [], [], 0.5)
                for end in readable:
                    data = end.recv(65536)
                    if data:
                        peers[end].sendall(data)
                        continue
                    open_ends.discard(end)
                    with contextlib.suppress(OSError):
                        peers[end].shutdown(socket.SHUT_WR)
        except OSError:
            pass  # a reset on either side ends the connection, as a real balancer does
        finally:
            client.close()
            backend.close()
