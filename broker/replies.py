"""Reply subjects taken from messages must be inboxes (DESIGN.md §10).

A reply subject is chosen by whoever sent the message: a ``Foundation-Reply-To``
header, a request's reply, a protocol message's answer address. Published to
blindly, it turns the receiver into a relay that speaks with the receiver's
permissions — a node's answer could land on another node's
``foundation.control.<node>.drain``. So an answer goes only to an inbox
(``_INBOX.`` followed by plain tokens); anything else is refused and logged,
and the work itself (a stored result) is not affected.
"""

from __future__ import annotations

import logging
from typing import Any

from broker.subjects import INBOX_PREFIX, is_inbox

log = logging.getLogger("foundation.broker.replies")

__all__ = ["INBOX_PREFIX", "is_inbox", "reply_allowed", "request_reply"]


def reply_allowed(subject: str | None, what: str) -> bool:
    """True iff ``subject`` is an inbox; otherwise logs the refusal (naming ``what``) and returns False.

    An empty subject (no reply asked for) is simply False, without a log line.
    """
    if not subject:
        return False
    if is_inbox(subject):
        return True
    log.warning("refused reply subject %r of %s: replies go only to inboxes (%s...)", subject[:200], what, INBOX_PREFIX)
    return False


def request_reply(request: Any) -> str | None:
    """The reply subject of a NATS micro request (the library exposes none)."""
    msg = getattr(request, "_msg", None)
    return getattr(msg, "reply", None) or None
