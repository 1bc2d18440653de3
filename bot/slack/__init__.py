"""The Slack bot: the Bolt app and its listeners, the Block Kit builders, the notifier."""
