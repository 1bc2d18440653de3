"""The local Slack sandbox: a loopback Slack for the bot (see bot/sandbox/sandbox.py)."""
