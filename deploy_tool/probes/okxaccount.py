"""The exchange account behind the API key: OKX's signed private REST, read only.

`GET /api/v5/account/config` (the key's permissions, its IP binding, the account level and position mode,
whether it is a sub-account) and `GET /api/v5/account/balance` (total equity). Requests are signed as OKX
documents it: `OK-ACCESS-SIGN` = base64(HMAC-SHA256(secret, timestamp + METHOD + requestPath + body)), the
timestamp ISO 8601 UTC with milliseconds. The key, secret and passphrase come from environment variables
and are never printed; OKX's error codes become messages that say what to fix.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import math
from dataclasses import dataclass
from typing import Any, Mapping

from deploy_tool import ProbeError
from deploy_tool.redact import Redactor, mask_url

CONFIG_PATH = "/api/v5/account/config"
BALANCE_PATH = "/api/v5/account/balance"
TIMEOUT = (3.05, 5.0)
# OKX's codes for a request the account rejects, and what the operator should do about each.
ERRORS = {
    "50101": "the API key belongs to the other environment (live vs demo trading): use a key of this one, or "
             "toggle --okx-demo",
    "50102": "the request's timestamp expired: this host's clock is off; sync it (chrony/NTP)",
    "50103": "the request carries no OK-ACCESS-KEY: set the API key variable",
    "50104": "the request carries no OK-ACCESS-PASSPHRASE: set the passphrase variable",
    "50105": "the passphrase is wrong for this API key",
    "50110": "this host's IP is not on the API key's whitelist: add it in the key's settings",
    "50111": "the API key is not valid (OK-ACCESS-KEY): check the key variable",
    "50113": "the signature is invalid: the secret does not belong to this key",
    "50120": "the API key lacks the permission for this call: give it read permission",
}


@dataclass(frozen=True)
class Credentials:
    """An API key's parts, read from the environment; the values never leave this object but to sign."""

    key: str
    secret: str
    passphrase: str

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], key_env: str, secret_env: str,
                     passphrase_env: str) -> Credentials | None:
        """The credentials when every variable is set; None when none is; ProbeError naming the missing ones."""
        values = {name: environ.get(name, "").strip() for name in (key_env, secret_env, passphrase_env)}
        if not any(values.values()):
            return None
        missing = [name for name, value in values.items() if not value]
        if missing:
            raise ProbeError(f"the exchange API key is set only in part: {', '.join(missing)} missing")
        return cls(values[key_env], values[secret_env], values[passphrase_env])


def timestamp(now: dt.datetime | None = None) -> str:
    """OKX's request timestamp: ISO 8601 UTC with milliseconds, e.g. 2020-12-08T09:08:57.715Z."""
    now = (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def sign(secret: str, stamp: str, method: str, request_path: str, body: str = "") -> str:
    """OK-ACCESS-SIGN for one request."""
    message = f"{stamp}{method.upper()}{request_path}{body}".encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def headers(creds: Credentials, method: str, request_path: str, body: str = "", demo: bool = False,
            now: dt.datetime | None = None) -> dict[str, str]:
    stamp = timestamp(now)
    found = {"OK-ACCESS-KEY": creds.key, "OK-ACCESS-SIGN": sign(creds.secret, stamp, method, request_path, body),
             "OK-ACCESS-TIMESTAMP": stamp, "OK-ACCESS-PASSPHRASE": creds.passphrase,
             "Content-Type": "application/json", "Accept": "application/json"}
    if demo:
        found["x-simulated-trading"] = "1"
    return found


def signed_get(base_url: str, request_path: str, creds: Credentials, demo: bool = False,
               timeout: Any = TIMEOUT, session: Any = None) -> list[dict]:
    """The `data` of a signed GET (on `session` when given, else on one of its own); ProbeError with OKX's
    code and what to do."""
    from deploy_tool.probes.http import DeadlineSession, get_json

    url = base_url.rstrip("/") + request_path
    shown = mask_url(url) or url
    if session is None:
        with DeadlineSession() as own:
            return signed_get(base_url, request_path, creds, demo, timeout, own)
    status, body = get_json(session, url, timeout, headers(creds, "GET", request_path, demo=demo))
    code = str(body.get("code")) if isinstance(body, dict) else None
    # OKX's message masked (the key, secret and passphrase, should it echo one) before it is cut to length.
    sent = Redactor.for_request(url, secrets=(creds.key, creds.secret, creds.passphrase))
    if code in ERRORS:
        raise ProbeError(f"{shown}: OKX error {code} ({sent.shorten(str(body.get('msg', '')), 80)}): {ERRORS[code]}")
    if status != 200 or code != "0" or not isinstance(body.get("data"), list) or not body["data"]:
        msg = str(body.get("msg", "")) if isinstance(body, dict) else ""
        raise ProbeError(f"{shown} answered HTTP {status} code {code!r} {sent.shorten(msg, 120)}".rstrip())
    return body["data"]


@dataclass(frozen=True)
class Account:
    """What the key can do and what the account holds."""

    uid: str
    main_uid: str
    perm: tuple[str, ...]
    ip: str
    acct_lv: str
    pos_mode: str
    total_eq: float | None
    demo: bool

    @property
    def sub_account(self) -> bool:
        return bool(self.main_uid) and self.uid != self.main_uid

    def describe(self) -> str:
        kind = "sub-account" if self.sub_account else "main account"
        return (f"{'demo' if self.demo else 'live'} {kind}, acctLv {self.acct_lv}, posMode {self.pos_mode}, "
                f"perm {','.join(self.perm) or 'none'}")


ACCOUNT_LEVELS = {"1": "spot", "2": "spot and futures", "3": "multi-currency margin", "4": "portfolio margin"}


def probe_account(base_url: str, creds: Credentials, demo: bool = False) -> Account:
    """The key's configuration and the account's total equity (two calls on one session)."""
    from deploy_tool.probes.http import DeadlineSession

    with DeadlineSession() as session:
        config = signed_get(base_url, CONFIG_PATH, creds, demo, session=session)[0]
        balance = signed_get(base_url, BALANCE_PATH, creds, demo, session=session)[0]
    total_eq: float | None
    try:
        total_eq = float(balance["totalEq"])
    except (KeyError, TypeError, ValueError):
        total_eq = None
    if total_eq is not None and not math.isfinite(total_eq):
        total_eq = None
    perm = tuple(p.strip() for p in str(config.get("perm", "")).split(",") if p.strip())
    level = str(config.get("acctLv", ""))
    return Account(uid=str(config.get("uid", "")), main_uid=str(config.get("mainUid", "")), perm=perm,
                   ip=str(config.get("ip", "")).strip(), acct_lv=f"{level} ({ACCOUNT_LEVELS.get(level, 'unknown')})",
                   pos_mode=str(config.get("posMode", "")), total_eq=total_eq, demo=demo)
