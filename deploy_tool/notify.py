"""Telling someone: a pause, a breach, a ramp abort or a failing gate, sent to chat, mail or a webhook.

Through apprise (one library for Slack, Telegram, Discord, e-mail, generic JSON webhooks and many more),
imported only when a notification is sent. A notification goes out after the action it reports, in a
thread the caller waits on for at most `timeout_s`: a slow or dead receiver never delays or blocks a pause,
and what became of each notification is written to the audit.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from deploy_tool.redact import Redactor

NOTIFY_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Delivery:
    """What became of one notification: sent, failed or timeout."""

    result: str
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"result": self.result, "detail": self.detail}


def send(urls: Sequence[str], title: str, body: str, timeout_s: float = NOTIFY_TIMEOUT_S) -> Delivery:
    """Send to every URL; wait at most `timeout_s` for it (the thread is left behind, never waited on longer).
    The delivery's detail has the URLs (credentials: whoever has one can post) masked before it is cut."""
    outcome: list[Delivery] = []
    sent = Redactor(urls)

    def run() -> None:
        try:
            import apprise

            client = apprise.Apprise()
            bad = [i for i, target in enumerate(urls, 1) if not client.add(target)]
            if not len(client):
                outcome.append(Delivery("failed", "no usable notification URL"))
                return
            ok = bool(client.notify(title=title, body=body))
            detail = f"URL(s) number {', '.join(map(str, bad))} not understood" if bad else ""
            outcome.append(Delivery("sent" if ok and not bad else "failed", detail or ("" if ok else "not delivered")))
        except Exception as exc:  # a notification problem must never become the caller's
            outcome.append(Delivery("failed", sent.shorten(f"{type(exc).__name__}: {exc}", 200)))

    thread = threading.Thread(target=run, name="notify", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not outcome:
        return Delivery("timeout", f"no answer within {timeout_s:g} s")
    return outcome[0]


def tell(urls: Sequence[str] | None, about: str, title: str, lines: Sequence[str], scrub: Callable[[str], str],
         record: Callable[[dict[str, Any]], None], warn: Callable[[str], None]) -> Delivery | None:
    """Notify (when URLs are given), audit the delivery, and warn when it did not get through."""
    if not urls:
        return None
    delivery = send(urls, scrub(title), scrub("\n".join(lines)))
    delivery = Delivery(delivery.result, scrub(delivery.detail))  # the audit and the terminal get it too
    record({"event": "notify", "about": about, "targets": len(urls), **delivery.as_dict()})
    if delivery.result != "sent":
        warn(f"gradual-deploy: WARNING: the {about} notification was not delivered ({delivery.result}"
             + (f": {delivery.detail}" if delivery.detail else "") + ")")
    return delivery
