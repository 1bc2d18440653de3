"""Links to the cards of what waits for people, for App Home: each approval's and task's card is
found where it was posted (`storage.messages`: channel and ts) and linked by the permalink Slack
gives for it (`chat.getPermalink`, which needs no scope).

A permalink never changes for a message, so it is kept while the Web API client lives, keyed by
channel and ts (a card posted again elsewhere gets its new link): opening the tab again costs
no call for the cards it linked before. An item whose card is not
posted yet, or whose link Slack will not give (the message was deleted), is listed without one.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from weakref import WeakKeyDictionary

import structlog
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from pipelines.runtime import Runtime
from pipelines.views import ApprovalView, TaskView
from storage import messages

log = structlog.get_logger()

_CACHES: WeakKeyDictionary[WebClient, dict[tuple[str, str], str]] = WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 5000


def card_links(
    client: WebClient, rt: Runtime, items: Sequence[ApprovalView | TaskView]
) -> dict[str, str]:
    """Item id → its card's permalink, for the items whose card is in Slack."""
    with rt.db.transaction() as conn:
        refs = {
            item.id: messages.message_ref(
                conn, kind="approval" if isinstance(item, ApprovalView) else "task", ref_id=item.id
            )
            for item in items
        }
    with _CACHE_LOCK:
        cache = _CACHES.setdefault(client, {})
    links: dict[str, str] = {}
    for item_id, ref in refs.items():
        if ref is None:
            continue
        key = (ref.channel, ref.ts)
        with _CACHE_LOCK:
            cached = cache.get(key)
        if cached is None:
            try:
                response = client.chat_getPermalink(channel=ref.channel, message_ts=ref.ts)
            except SlackApiError as exc:
                log.info("slack.permalink_refused", ref_id=item_id, error=exc.response.get("error"))
                continue
            except (SlackClientError, OSError) as exc:
                log.warning("slack.permalink_failed", ref_id=item_id, error=str(exc))
                continue
            cached = str(response.get("permalink") or "")
            if not cached:
                continue
            with _CACHE_LOCK:
                if len(cache) >= _CACHE_SIZE:
                    cache.clear()
                cache[key] = cached
        links[item_id] = cached
    return links
