"""Keeping secrets and terminal control sequences out of everything a person or an auditor reads.

Two layers: URLs are written masked at the source (`mask_url`), and every text that leaves the tool
passes a `Redactor` that knows the secret values themselves (database passwords, the admin token, any
environment variable whose name says it holds a key, token, secret or password). `Redactor.scrub` also
writes control characters out as text (`sanitise`), so that what a server answers cannot retitle, recolour
or rewrite the operator's terminal. Text from outside is cut to length only after it was scrubbed (`clip`):
a secret cut in two is no longer the value the redactor looks for.
"""

from __future__ import annotations

import binascii
import json
import os
import re
from collections import Counter
from typing import Any, Iterable, Mapping
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

MASK = "***"
# base64 and html.escape without importing base64 (struct) and html (html.entities) on the path of a pause:
# the same bytes, from binascii and str.replace.
_URLSAFE = str.maketrans("+/", "-_")


def _b64(data: bytes) -> str:
    """base64.b64encode(data).decode()"""
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _html_escape(text: str) -> str:
    """html.escape(text) (quote=True)"""
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
            .replace("'", "&#x27;"))
SECRET_NAME = re.compile(
    r"(PASS(WORD|WD|PHRASE)?|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE|CREDENTIAL|AUTH)", re.IGNORECASE
)
# Request headers whose values are credentials (Authorization, X-API-Key, OK-ACCESS-KEY/-SIGN/-PASSPHRASE).
SECRET_HEADER = re.compile(r"AUTH|KEY|SIGN|PASS|SECRET|TOKEN|COOKIE|CREDENTIAL", re.IGNORECASE)
# user:password@ wherever it stands, for strings that are not well-formed URLs.
_LOOSE_USERINFO = re.compile(r"([^\s:/@]+:)([^\s@/]+)@")
# Shorter values are too likely to be ordinary words or numbers elsewhere in the output.
MIN_SECRET_LENGTH = 4
# A piece of a secret this long is masked wherever it appears, not only the whole value: a server that echoes
# the token cut short (its first 12 characters), or a message cut across it, still shows a piece of it. Eight
# characters of a random token are some 40 to 48 bits of it, too many to leave on a terminal; what can still
# show at the edge of a cut made elsewhere is at most 7 characters, never most of the token. Shorter pieces
# would start to match ordinary words and numbers. Over-masking is safe; a secret shorter than this is masked
# whole only.
PIECE_LENGTH = 8
# Schemes whose user name is a role, not a credential (the password comes from elsewhere: .pgpass, peer auth).
DATABASE_SCHEMES = frozenset({"postgres", "postgresql", "mysql", "mariadb", "mssql", "sqlserver", "oracle",
                              "cockroachdb", "redshift", "sqlite"})
# C0 and C1 control characters and DEL, except newline and tab: escape sequences (ESC ]0;title BEL retitles a
# terminal, ESC [31m recolours it, CR overwrites a line, CSI 0x9b is ESC [ on some terminals).
# Unicode format and separator characters too: bidi overrides and isolates (U+202A-U+202E, U+2066-U+2069,
# U+061C) reorder what a person reads, zero-width ones (U+200B-U+200F, U+2060, U+FEFF, U+00AD, U+180E) hide
# text, U+2028/U+2029 break a line where a terminal or an editor may.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e"
                      "\u2060-\u2069\ufeff]")
_LINE_BREAKS = re.compile("[\n\t]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def sanitise(text: str) -> str:
    """The text with every control, bidi and invisible character but newline and tab written out (ESC as
    `\\x1b`, U+202E as `\\u202e`)."""
    return _CONTROL.sub(_escape, text)


def one_line(text: str) -> str:
    """Outside text that belongs on one line (a server's error in a message): newlines and tabs written out
    too, so that no answer can add a line of its own (`pause: DONE`) to a report."""
    return _LINE_BREAKS.sub(_escape, sanitise(text))


def clip(text: str, limit: int) -> str:
    """At most `limit` characters of a text, `...` marking a cut. Only for text already masked: cut first, a
    secret is no longer the value the redactor knows."""
    return text if len(text) <= limit else text[:limit] + "..."


def _token_user(parts: Any) -> bool:
    """A user name without a password outside a database URL: how a token rides in a URL
    (`https://<token>@host`, HTTP basic auth with the token as user)."""
    scheme = parts.scheme.split("+", 1)[0].lower()
    return bool(parts.username) and not parts.password and scheme not in DATABASE_SCHEMES


def mask_url(url: str | None) -> str | None:
    """The URL with its password, a user name that stands without one (a token), and any secret-looking
    query parameter replaced by ***; a database URL's user is shown (`postgresql://app:***@db`)."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
        token_user = _token_user(parts)
    except ValueError:
        return MASK
    if not parts.password and not token_user and not any(SECRET_NAME.search(k) for k, _ in parse_qsl(parts.query)):
        # Nothing a URL parser sees, but a malformed URL ("host:pw@db", "http//u:pw@h") may still hold
        # a password in front of an @; urlunsplit would also drop the empty host of sqlite:////abs/path.
        return _LOOSE_USERINFO.sub(rf"\1{MASK}@", url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if token_user:
            netloc = f"{MASK}@{hostport}"
        elif ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:{MASK}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if SECRET_NAME.search(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_secrets(url: str | None) -> list[str]:
    """The secret values inside a URL: its password, a user name that stands without one, secret-looking
    query values, and the basic-auth header value a client sends for its user info."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
        token_user = _token_user(parts)
    except ValueError:
        return [url]
    found = [m.group(2) for m in _LOOSE_USERINFO.finditer(url) if not parts.password]
    for value in ([parts.password] if parts.password else []) + ([parts.username] if token_user else []):
        assert value is not None
        found += [value, unquote(value), quote(unquote(value), safe="")]
    if parts.username is not None and (parts.password or token_user):
        # What requests sends for user info in a URL: a server that echoes its Authorization header shows this.
        basic = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        found.append(_b64(basic.encode("latin-1", "replace")))
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if SECRET_NAME.search(key) and value:
            found.append(value)
    return found


def _pieces_apply(secret: str) -> bool:
    """Is a piece of this value a piece of a secret? Not for a value made of parts that are masked on their
    own (a URL: its password and token; a PEM: each base64 line), nor for a location named in a secret-looking
    variable (SSH_AUTH_SOCK, XAUTHORITY): masking pieces of those would mask every path beside them."""
    if len(secret) < PIECE_LENGTH or "\n" in secret or "://" in secret:
        return False
    try:
        return not (os.path.isabs(secret) and os.path.exists(secret))
    except (OSError, ValueError):
        return True


class Redactor:
    """Replaces every known secret value, and every piece of one of at least PIECE_LENGTH characters, in a
    text with ***, and writes control characters out (`sanitise`)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._whole: set[str] = set()
        # Each secret's pieces, by the secret; a piece two different secrets have in common is a naming
        # convention ("sandbox-" of the sandbox's key, token and passphrase, a provider's "sk_live_"), not
        # secret material, and masking it would mask ordinary names beside it ("sandbox-momentum"): such a
        # piece is masked only as part of a longer one or of the whole secret.
        self._grams: dict[str, set[str]] = {}
        self._pieces: frozenset[str] | None = frozenset()
        self._ordered: list[str] = []
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        """Mask this value (and, for a URL, its password and token on their own too)."""
        self._add([secret] if secret else [], secret or "")
        if secret and "://" in secret:
            self.add_url(secret)

    def _add(self, values: Iterable[str], key: str) -> None:
        """Mask each value; they are forms of one secret (`key`), whose pieces are its own."""
        for secret in values:
            if not secret or len(secret) < MIN_SECRET_LENGTH:
                continue
            # The same value also appears escaped in HTML and JSON documents, %-encoded in a URL, base64'd (an
            # echoed Basic header), with '/' escaped by some JSON writers.
            b64 = _b64(secret.encode())
            forms = {secret, _html_escape(secret), json.dumps(secret)[1:-1], secret.replace("/", "\\/"),
                     quote(secret, safe=""), b64.rstrip("="), b64.translate(_URLSAFE).rstrip("=")}
            forms = {f for f in forms if len(f) >= MIN_SECRET_LENGTH}
            self._whole |= forms
            self._ordered = sorted(self._whole, key=len, reverse=True)
            if _pieces_apply(secret):
                grams = self._grams.setdefault(key, set())
                grams.update(f[i:i + PIECE_LENGTH] for f in forms for i in range(len(f) - PIECE_LENGTH + 1))
                self._pieces = None

    def add_url(self, url: str | None) -> None:
        """Mask the secrets inside a URL (`url_secrets`)."""
        for secret in url_secrets(url):
            self._add([secret], unquote(secret))  # p%40ss and p@ss are one secret

    @classmethod
    def for_request(cls, url: str | None = None, headers: Mapping[str, str] | None = None,
                    secrets: Iterable[str | None] = ()) -> "Redactor":
        """A redactor for what a client sent, to mask a server's answer before it is cut to length: the
        credentials in the URL, the credential headers (an Authorization's value without its scheme) and any
        other secret the client holds."""
        redactor = cls()
        redactor.add_url(url)
        for name, value in (headers or {}).items():
            if SECRET_HEADER.search(name) and value:
                _, _, credentials = value.partition(" ")
                redactor.add(credentials if name.lower().endswith("authorization") and credentials else value)
        for secret in secrets:
            redactor.add(secret)
        return redactor

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
        """Does it know any secret? (`scrub` sanitises either way.)"""
        return bool(self._whole)

    def _piece_set(self) -> frozenset[str]:
        if self._pieces is None:
            # Lower-cased: a server that upper-cases what it echoes does not unmask it.
            owners = Counter(gram for grams in self._grams.values() for gram in {g.lower() for g in grams})
            self._pieces = frozenset(gram for gram, count in owners.items() if count == 1)
        return self._pieces

    def mask(self, text: str) -> str:
        """The text with every known secret, and every piece of one of at least PIECE_LENGTH characters, as ***."""
        if not self._whole or not text:
            return text
        for secret in self._ordered:
            if secret in text:
                text = text.replace(secret, MASK)
        pieces = self._piece_set()
        if not pieces or len(text) < PIECE_LENGTH:
            return text
        spans: list[list[int]] = []
        lowered = text.lower()
        for i in range(len(text) - PIECE_LENGTH + 1):
            if lowered[i:i + PIECE_LENGTH] in pieces:
                if spans and i <= spans[-1][1]:
                    spans[-1][1] = i + PIECE_LENGTH
                else:
                    spans.append([i, i + PIECE_LENGTH])
        if not spans:
            return text
        out, last = [], 0
        for start, end in spans:
            out += [text[last:start], MASK]
            last = end
        out.append(text[last:])
        return "".join(out)

    def scrub(self, text: str) -> str:
        """What may reach a person or a file: secrets masked (`mask`), control characters written out
        (`sanitise`), also when no secret is known."""
        if not text:
            return text
        return sanitise(self.mask(text))

    def shorten(self, text: str, limit: int) -> str:
        """Outside text for a one-line message: masked whole, every control character and line break written
        out (`one_line`), then cut to `limit` characters (`clip`)."""
        # Only what can reach the cut is masked: a huge error page costs no time on a pause's path. The margin
        # keeps a secret that straddles the cut whole for the mask (its longest form, twice).
        margin = 2 * max((len(s) for s in self._whole), default=0) + PIECE_LENGTH
        return clip(one_line(self.mask(text[:limit + margin])), limit)

    def scrub_data(self, value: Any) -> Any:
        """The same structure with every string scrubbed (dict keys included)."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {self.scrub_data(k): self.scrub_data(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.scrub_data(v) for v in value]
        return value
