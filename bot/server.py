"""Serving the ASGI app with uvicorn, in the foreground (`gatehouse serve`) or on a thread."""

from __future__ import annotations

import signal
import socket
import threading
from typing import Any

import structlog
import uvicorn

log = structlog.get_logger()


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
    """Blocks until SIGINT/SIGTERM, then returns so the caller can drain.

    uvicorn handles the signal to stop, then re-raises it with the handler that was installed
    before it started; with Python's defaults that would kill the process before the drain.
    So the handlers it finds are ones that just note the signal.
    """
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def noted(signum: int, _frame: Any) -> None:
        log.warning("serve.stopping", signal=signal.Signals(signum).name)

    for sig in previous:
        signal.signal(sig, noted)
    try:
        config = uvicorn.Config(asgi, host=host, port=port, log_level="warning", access_log=False)
        uvicorn.Server(config).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
