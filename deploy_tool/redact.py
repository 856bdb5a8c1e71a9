"""Keeping secrets out of everything a person or an auditor reads.

Two layers: URLs are written masked at the source (`mask_url`), and every text that leaves the tool
passes a `Redactor` that knows the secret values themselves (database passwords, the admin token, any
environment variable whose name says it holds a key, token, secret or password).
"""

from __future__ import annotations

import html
import json
import os
import re
from typing import Any, Iterable, Mapping
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

MASK = "***"
SECRET_NAME = re.compile(
    r"(PASS(WORD|WD|PHRASE)?|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE|CREDENTIAL|AUTH)", re.IGNORECASE
)
# user:password@ wherever it stands, for strings that are not well-formed URLs.
_LOOSE_USERINFO = re.compile(r"([^\s:/@]+:)([^\s@/]+)@")
# Shorter values are too likely to be ordinary words or numbers elsewhere in the output.
MIN_SECRET_LENGTH = 4


def mask_url(url: str | None) -> str | None:
    """The URL with its password (and any secret-looking query parameter) replaced by ***."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    if not parts.password and not any(SECRET_NAME.search(k) for k, _ in parse_qsl(parts.query)):
        # Nothing a URL parser sees, but a malformed URL ("host:pw@db", "http//u:pw@h") may still hold
        # a password in front of an @; urlunsplit would also drop the empty host of sqlite:////abs/path.
        return _LOOSE_USERINFO.sub(rf"\1{MASK}@", url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:{MASK}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if SECRET_NAME.search(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_secrets(url: str | None) -> list[str]:
    """The secret values inside a URL: its password and secret-looking query values."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    found = [m.group(2) for m in _LOOSE_USERINFO.finditer(url) if not parts.password]
    if parts.password:
        found += [parts.password, unquote(parts.password), quote(unquote(parts.password), safe="")]
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if SECRET_NAME.search(key) and value:
            found.append(value)
    return found


class Redactor:
    """Replaces every known secret value in a text with ***."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        if secret and len(secret) >= MIN_SECRET_LENGTH:
            # The same value also appears escaped in HTML and JSON documents.
            for form in (secret, html.escape(secret), json.dumps(secret)[1:-1]):
                self._secrets.add(form)

    def add_url(self, url: str | None) -> None:
        for secret in url_secrets(url):
            self.add(secret)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> "Redactor":
        """A redactor for every secret-looking variable of the environment and URL passwords in it."""
        environ = os.environ if environ is None else environ
        redactor = cls()
        for name, value in environ.items():
            if SECRET_NAME.search(name) or "PRIVATE KEY-----" in value:
                redactor.add(value)
                for line in value.splitlines():  # a PEM key (GD_SIGNING_KEY) line by line, too
                    if len(line.strip()) >= 16 and not line.startswith("-----"):
                        redactor.add(line.strip())
            if "://" in value and "@" in value:
                redactor.add_url(value)
        return redactor

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def scrub(self, text: str) -> str:
        if not self._secrets or not text:
            return text
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def contains_secret(self, text: str) -> bool:
        return any(secret in text for secret in self._secrets)

    def scrub_data(self, value: Any) -> Any:
        """The same structure with every string scrubbed (dict keys included)."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {self.scrub_data(k): self.scrub_data(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.scrub_data(v) for v in value]
        return value
