"""The floor for bench/ack_load.py: a bare Bolt listener that only acks `/gatehouse`.

    python bench/bare_bolt.py PORT

A sync `App` with `process_before_response=True`, mounted through Bolt's Starlette adapter on
uvicorn, verifying the same signing secret as the bot (SLACK_SIGNING_SECRET) and calling
`auth.test` once at the Web API in SLACK_API_URL, as the bot does. No replay check, no work
after the ack: what Bolt and uvicorn cost on their own.
"""

from __future__ import annotations

import os
import sys

import uvicorn
from slack_bolt import Ack, App
from slack_bolt.adapter.starlette import SlackRequestHandler
from slack_sdk import WebClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def build(api_url: str, token: str, secret: str) -> Starlette:
    app = App(
        client=WebClient(token=token, base_url=api_url),
        signing_secret=secret,
        process_before_response=True,
        token_verification_enabled=False,
    )

    @app.command("/gatehouse")
    def command(ack: Ack) -> None:
        ack()

    handler = SlackRequestHandler(app)

    async def events(request: Request) -> Response:
        return await handler.handle(request)

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/slack/events", events, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


if __name__ == "__main__":
    asgi = build(
        os.environ["SLACK_API_URL"],
        os.environ["SLACK_BOT_TOKEN"],
        os.environ["SLACK_SIGNING_SECRET"],
    )
    uvicorn.run(
        asgi, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False
    )
