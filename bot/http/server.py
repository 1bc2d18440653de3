"""Serving the ASGI app with uvicorn, in the foreground (`gatehouse serve`) or on a thread.

uvicorn believes `X-Forwarded-For` from loopback by default, so any local client (or one whose
proxy runs on the same host) could pick the address it is rate-limited by. Here forwarded
headers are read only from the `trusted_proxies` given (GATEHOUSE_TRUSTED_PROXIES), and not at
all without any.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

import structlog
import uvicorn

log = structlog.get_logger()


def forwarding(trusted_proxies: Sequence[str]) -> dict[str, Any]:
    """uvicorn's options for forwarded headers: from these addresses only, or off."""
    if not trusted_proxies:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": list(trusted_proxies)}


class BackgroundServer:
    """uvicorn on an already-bound socket in a daemon thread; `url` is known before it starts."""

    def __init__(
        self,
        asgi: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        trusted_proxies: Sequence[str] = (),
    ) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        config = uvicorn.Config(
            asgi,
            log_level="warning",
            access_log=False,
            lifespan="off",
            **forwarding(trusted_proxies),
        )
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


class StopSignals:
    """SIGINT/SIGTERM noted, not obeyed, from before `gatehouse serve` starts its workers until it
    has drained them: a signal that lands while the process is still starting (workers already
    running a pipeline, uvicorn not yet up) must lead to a drain too, never to a killed run.

    uvicorn handles the signal to stop while it runs, then re-raises it with the handler that was
    installed before it started; with Python's defaults that would kill the process before the
    drain, so the handlers it finds are these, which only note the signal.
    """

    def __init__(self) -> None:
        self.requested = False
        self._server: uvicorn.Server | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._noted)
        return self

    def __exit__(self, *_exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _noted(self, signum: int, _frame: Any) -> None:
        log.info("serve.stopping", signal=signal.Signals(signum).name)
        self.requested = True
        if self._server is not None:
            self._server.should_exit = True

    def watch(self, server: uvicorn.Server) -> None:
        """A signal noted before uvicorn took over its handlers stops this server too."""
        self._server = server
        if self.requested:
            server.should_exit = True


class _AnnouncingServer(uvicorn.Server):
    """uvicorn that calls `announce` once its sockets are bound: a line saying where the bot
    listens is only true from then on (a port in use never gets it)."""

    def __init__(self, config: uvicorn.Config, announce: Callable[[], None] | None) -> None:
        super().__init__(config)
        self._announce = announce

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit and self._announce is not None:
            self._announce()


def serve_forever(
    asgi: Any,
    host: str,
    port: int,
    stop: StopSignals | None = None,
    *,
    trusted_proxies: Sequence[str] = (),
    announce: Callable[[], None] | None = None,
) -> None:
    """Blocks until SIGINT/SIGTERM (also one `stop` noted earlier), then returns so the caller
    can drain. `announce` runs once the port is bound."""
    with StopSignals() if stop is None else contextlib.nullcontext(stop) as signals:
        config = uvicorn.Config(
            asgi,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            **forwarding(trusted_proxies),
        )
        server = _AnnouncingServer(config, announce)
        signals.watch(server)
        if not signals.requested:
            server.run()
