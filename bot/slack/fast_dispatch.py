"""Bolt's dispatch without its per-call argument injection where nothing needs it: the same
listeners and middleware, matched and run in the same order, for less of the interpreter.

For every request Bolt tries each listener's matchers in turn, and each built-in matcher (the
`command`, `action`, `view`… predicate a decorator sets up) is called through
`build_required_kwargs`, which builds all ~30 injectable arguments (`say`, `respond`, the
payload views…) to pass the one it wants: `body`. The same for each global middleware added as
a function. With this bot's ~20 listeners that was two thirds of Bolt's dispatch of a slash
command (cProfile of `gatehouse serve`'s ASGI app driven in-process), and it is CPU the HTTP
front cannot give to the next ack (bench/ack_load.py). Here, after every listener is
registered:
- a built-in matcher whose predicate takes only `body` is called with `body=req.body`: exactly
  the dict `build_required_kwargs` would have passed it. Bolt's payload views of the body
  (`to_action`, `to_view`, `to_step`…) are still taken, once per request instead of once per
  matcher, before the first predicate: a signed body they choke on (a view without a `type`)
  raises there as it did, and Bolt answers it as before;
- a global middleware taking `(req, resp, next)` is called with those three directly, after
  the same payload views (Bolt's injection for the first one is where such a body raised).
Anything else (a matcher or middleware with other arguments, a listener's own middleware, the
listener itself) goes through Bolt as before.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from slack_bolt import App, BoltRequest, BoltResponse
from slack_bolt.listener_matcher.builtins import BuiltinListenerMatcher
from slack_bolt.listener_matcher.listener_matcher import ListenerMatcher
from slack_bolt.middleware import Middleware
from slack_bolt.request.payload_utils import (
    to_action,
    to_command,
    to_event,
    to_message,
    to_options,
    to_shortcut,
    to_step,
    to_view,
)
from slack_bolt.util.utils import get_arg_names_of_callable

DirectMiddlewareFunc = Callable[[Any, BoltResponse, Callable[[], BoltResponse]], Any]
MIDDLEWARE_ARGS = ["req", "resp", "next"]
# What `build_required_kwargs` takes of every body, in its order: what may raise on a bad one.
PAYLOAD_VIEWS = (
    to_options,
    to_shortcut,
    to_action,
    to_view,
    to_command,
    to_event,
    to_message,
    to_step,
)
_viewed: weakref.WeakSet[BoltRequest] = weakref.WeakSet()  # requests whose views were taken


def take_payload_views(req: BoltRequest) -> None:
    """Bolt's payload views of `req.body`, taken once per request for what they raise."""
    if req in _viewed:
        return
    for view in PAYLOAD_VIEWS:
        view(req.body)
    _viewed.add(req)


class BodyMatcher(ListenerMatcher):
    """A built-in matcher's `body` predicate, called with the body alone."""

    def __init__(self, func: Callable[..., bool]) -> None:
        self.func = func

    def matches(self, req: BoltRequest, resp: BoltResponse) -> bool:
        take_payload_views(req)
        return self.func(body=req.body)


class DirectMiddleware(Middleware):
    """A global middleware function of `(req, resp, next)`, called with exactly those."""

    def __init__(self, func: DirectMiddlewareFunc) -> None:
        self.func = func

    def process(
        self, *, req: BoltRequest, resp: BoltResponse, next: Callable[[], BoltResponse]
    ) -> BoltResponse | None:
        take_payload_views(req)
        result: BoltResponse | None = self.func(req, resp, next)
        return result

    @property
    def name(self) -> str:
        return f"DirectMiddleware(func={getattr(self.func, '__qualname__', repr(self.func))})"


def direct_middleware(func: DirectMiddlewareFunc) -> Middleware:
    """`func` as a Bolt global middleware that skips the argument injection; `func` must take
    `(req, resp, next)`, which it is handed positionally."""
    if get_arg_names_of_callable(func) != MIDDLEWARE_ARGS:
        raise TypeError(f"{func!r} must take (req, resp, next)")
    return DirectMiddleware(func)


def match_bodies_directly(app: App) -> int:
    """Swap each listener's built-in `body` matchers for `BodyMatcher`s (after every listener
    is registered); returns how many were swapped."""
    swapped = 0
    for listener in app._listeners:
        matchers = list(listener.matchers)
        for index, matcher in enumerate(matchers):
            if type(matcher) is BuiltinListenerMatcher and matcher.arg_names == ["body"]:
                matchers[index] = BodyMatcher(matcher.func)  # type: ignore[arg-type]
                swapped += 1
        listener.matchers = matchers
    return swapped
