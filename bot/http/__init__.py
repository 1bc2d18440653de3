"""The bot's HTTP side: the uvicorn server, request limits, webhooks and `/metrics`."""
