"""Serving the ASGI app with uvicorn, in the foreground (`gatehouse serve`) or on a thread."""

from __future__ import annotations

import socket
import threading
from typing import Any

import uvicorn


class BackgroundServer:
    """uvicorn on an already-bound socket in a daemon thread; `url` is known before it starts."""

    def __init__(self, asgi: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        config = uvicorn.Config(asgi, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> BackgroundServer:
        self._thread.start()
        while not self._server.started and self._thread.is_alive():
            threading.Event().wait(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()


def serve_forever(asgi: Any, host: str, port: int) -> None:
    """Blocks until SIGINT/SIGTERM (uvicorn's own handlers), then returns."""
    uvicorn.Server(
        uvicorn.Config(asgi, host=host, port=port, log_level="warning", access_log=False)
    ).run()
