"""Parsing a list of network addresses from one setting (the trusted proxies): a JSON list or a
comma list, each an IP address or a network in CIDR form, checked at start."""

from __future__ import annotations

import ipaddress
import json
from typing import Any


def address_list(value: Any) -> list[str]:
    """`'10.0.0.5, 10.1.0.0/16'` or `'["10.0.0.5"]'` (or a list) as a list of addresses and
    networks; ValueError naming the entry that is neither. "*" is refused: trusting every
    address lets any client choose the address it is rate-limited by."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text) if text.startswith("[") else text.split(",")
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON list ({exc}); or give a comma list") from None
    if not isinstance(value, list):
        raise ValueError("give a JSON list or a comma list of addresses")
    entries = [str(entry).strip() for entry in value if str(entry).strip()]
    for entry in entries:
        if entry == "*":
            raise ValueError("'*' would trust every client; list the proxies' addresses")
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(
                f"{entry!r} is not an IP address or network (e.g. 10.0.0.5 or 10.0.0.0/24)"
            ) from None
    return entries
