"""Signed evidence: an in-toto Statement (v1) in a DSSE envelope, signed with Ed25519.

The Statement's subjects are what the run is bound to (the backtest file, the risk configuration, the
trading system's code or config, its revision), each by digest; its predicate is the run's evidence. The
envelope signs DSSE's pre-authentication encoding (PAE) of the payload type and body, so a signature made
for one type of document cannot be replayed as another. `keyid` in a signature is only a hint to pick the
key; the signature is always checked against the keys the operator pinned.

The `cryptography` package does the Ed25519: well kept, and the one every Python signing tool builds on.
It is imported when a key is used, never on the path of `pause`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from deploy_tool import DeployError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
PREDICATE_TYPE = "https://github.com/gradual-deploy/gradual-deploy/preflight-evidence/v2"
SIGNING_KEY_ENV = "GD_SIGNING_KEY"
PRIVATE_NAME, PUBLIC_NAME = "signing-key.pem", "signing-key.pub.pem"
# Directories whose content is not the trading system's: version control and byte caches.
SKIPPED_DIRS = {".git", ".hg", ".svn", "__pycache__", ".mypy_cache", ".pytest_cache"}


class AttestError(DeployError):
    """A key, a signature or a statement is unusable; the message says which and what to do."""


# --- keys ---------------------------------------------------------------------------------------------


def key_id(public: Ed25519PublicKey) -> str:
    """The hex sha256 of the raw 32-byte public key: the same for the PEM and the raw form."""
    from cryptography.hazmat.primitives import serialization

    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def generate() -> tuple[bytes, bytes, str]:
    """A new key pair: (private PEM, public PEM, key id)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    return private_pem, public_pem, key_id(private.public_key())


def write_key_pair(directory: str | os.PathLike) -> tuple[Path, Path, str]:
    """Make a key pair in `directory` (never overwriting one): (private path, public path, key id)."""
    folder = Path(directory)
    private_path, public_path = folder / PRIVATE_NAME, folder / PUBLIC_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        private_pem, public_pem, kid = generate()
        for existing in (private_path, public_path):
            if os.path.lexists(existing):
                raise FileExistsError(0, "exists", str(existing))
        for target, data, mode in ((public_path, public_pem, 0o644), (private_path, private_pem, 0o600)):
            fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
    except FileExistsError as exc:
        raise AttestError(f"{exc.filename} already exists: a key is never overwritten; choose another --out "
                          "(rotation: make the new pair elsewhere, pin both public keys, then retire the old)") from None
    except OSError as exc:
        raise AttestError(f"cannot write a key in {folder}: {exc.strerror or exc}") from None
    return private_path, public_path, kid


def secret_forms(pem: str | None) -> list[str]:
    """The pieces of a private key PEM a redactor must mask: the whole text and each base64 line."""
    if not pem:
        return []
    lines = [line.strip() for line in pem.strip().splitlines() if line.strip() and not line.startswith("-----")]
    return [pem, pem.strip(), *lines]


@dataclass(frozen=True)
class SigningKey:
    """A private key loaded for signing, and where it came from (never its value)."""

    key: Ed25519PrivateKey
    keyid: str
    source: str


def load_signing_key(path: str | None, environ: Mapping[str, str] | None = None,
                     path_first: bool = False) -> SigningKey | None:
    """The signing key from GD_SIGNING_KEY (the PEM text) or the file `path` (first when `path_first`: it
    was given on the command line); None when neither is set."""
    environ = os.environ if environ is None else environ
    text = "" if path and path_first else environ.get(SIGNING_KEY_ENV, "").strip()
    source = f"environment variable {SIGNING_KEY_ENV}"
    if not text and path:
        source = f"file {path}"
        try:
            from deploy_tool import fileops

            text = fileops.read_text(path, limit=100_000)
        except (OSError, UnicodeDecodeError) as exc:
            raise AttestError(f"cannot read the signing key {path}: {getattr(exc, 'strerror', None) or exc}: "
                              "point --signing-key at the private key `gradual-deploy keygen` wrote") from None
    if not text:
        return None
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(text.encode(), password=None)
    except (ValueError, TypeError):
        raise AttestError(f"the signing key in {source} is not an unencrypted PEM private key: make one with "
                          "`gradual-deploy keygen`") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AttestError(f"the signing key in {source} is not an Ed25519 key: make one with `gradual-deploy keygen`")
    return SigningKey(key, key_id(key.public_key()), source)


def load_trusted(path: str | os.PathLike) -> dict[str, Ed25519PublicKey]:
    """The pinned public keys, by key id, from a file of one or more PEM public keys (or a directory of them)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from deploy_tool import fileops

    where = Path(path)
    try:
        files = sorted(p for p in where.iterdir() if p.suffix in (".pem", ".pub")) if where.is_dir() else [where]
    except OSError as exc:
        raise AttestError(f"cannot read the trusted keys in {where}: {exc.strerror or exc}") from None
    keys: dict[str, Ed25519PublicKey] = {}
    for file in files:
        try:
            text = fileops.read_text(file, limit=1_000_000)
        except FileNotFoundError:
            raise AttestError(f"no trusted keys at {file}: pin the public key(s) allowed to open real there, or "
                              "point --trusted-keys (GD_TRUSTED_KEYS) at the file; `gradual-deploy keygen` makes "
                              "a pair") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise AttestError(f"cannot read the trusted keys {file}: {getattr(exc, 'strerror', None) or exc}") from None
        blocks = [b for b in text.split("-----END PUBLIC KEY-----") if "-----BEGIN PUBLIC KEY-----" in b]
        if "PRIVATE KEY" in text:
            raise AttestError(f"{file} holds a private key: the trusted-keys file holds only public keys "
                              f"({PUBLIC_NAME}); keep the private key with the signer alone")
        for block in blocks:
            pem = block[block.index("-----BEGIN PUBLIC KEY-----"):] + "-----END PUBLIC KEY-----\n"
            try:
                key = serialization.load_pem_public_key(pem.encode())
            except ValueError:
                raise AttestError(f"{file} holds a public key that cannot be read") from None
            if not isinstance(key, Ed25519PublicKey):
                raise AttestError(f"{file} holds a public key that is not Ed25519")
            keys[key_id(key)] = key
    if not keys:
        raise AttestError(f"{where} holds no PEM public key: append the {PUBLIC_NAME} of the signer to it")
    return keys


# --- digests of what the run is bound to ---------------------------------------------------------------


def file_digest(path: str | os.PathLike) -> str:
    from deploy_tool import fileops

    digest = hashlib.sha256()
    with fileops.open_regular(path, "rb") as fh:  # a FIFO or device is refused, never waited on
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_digest(root: str | os.PathLike) -> str:
    """One sha256 for a directory: every file's relative path and the sha256 of its content, in sorted order.
    Symlinks are followed (a linked file counts by its content, a linked directory by everything in it) and
    recorded by their target too, so re-pointing a link changes the digest; a link loop is walked once.
    Version-control and cache directories (.git, __pycache__, ...) are left out: they change without the
    system changing."""
    base = Path(root)
    lines = []
    seen = {os.path.realpath(base)}
    def unreadable(exc: OSError) -> None:
        raise exc  # a directory it cannot read could hold any change: path_digest says so, never skips it

    for folder, dirs, names in os.walk(base, followlinks=True, onerror=unreadable):
        kept = []
        for name in sorted(dirs):
            path = Path(folder) / name
            if name in SKIPPED_DIRS:
                continue
            if path.is_symlink():
                lines.append(f"{path.relative_to(base).as_posix()}\0dirlink\0{os.readlink(path)}\n")
            real = os.path.realpath(path)
            if real in seen:
                continue  # a loop, or a second way to the same directory: its content counts once
            seen.add(real)
            kept.append(name)
        dirs[:] = kept
        for name in sorted(names):
            path = Path(folder) / name
            rel = path.relative_to(base).as_posix()
            if path.is_symlink():
                lines.append(f"{rel}\0link\0{os.readlink(path)}\n")
            if path.is_file():
                lines.append(f"{rel}\0{file_digest(path)}\n")
    return hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()


def path_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes or of a directory's tree; AttestError when it cannot be read."""
    try:
        return tree_digest(path) if Path(path).is_dir() else file_digest(path)
    except OSError as exc:
        raise AttestError(f"cannot read {path}: {exc.strerror or exc}") from None


def config_digest(body: Any) -> str:
    """sha256 of a configuration served as JSON (GET /config), in canonical form: key order and spacing of
    the answer do not change it, a changed value does."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                                     allow_nan=False).encode()).hexdigest()


def subject(name: str, sha256: str, role: str, **annotations: Any) -> dict[str, Any]:
    """An in-toto ResourceDescriptor with a sha256 digest; `role` says what it is to the run."""
    return {"name": name, "digest": {"sha256": sha256}, "annotations": {"role": role, **annotations}}


# --- the envelope ----------------------------------------------------------------------------------------


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what the signature covers."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(body), body)


def statement(subjects: list[dict[str, Any]], predicate: dict[str, Any]) -> dict[str, Any]:
    return {"_type": STATEMENT_TYPE, "subject": subjects, "predicateType": PREDICATE_TYPE, "predicate": predicate}


def sign(doc: dict[str, Any], key: SigningKey) -> dict[str, Any]:
    """The statement in a DSSE envelope signed by `key`."""
    body = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    signature = key.key.sign(pae(PAYLOAD_TYPE, body))
    return {"payload": base64.b64encode(body).decode(), "payloadType": PAYLOAD_TYPE,
            "signatures": [{"keyid": key.keyid, "sig": base64.b64encode(signature).decode()}]}


@dataclass(frozen=True)
class Verified:
    """A statement whose signature checked out, and the key id that signed it."""

    statement: dict[str, Any]
    keyid: str

    @property
    def predicate(self) -> dict[str, Any]:
        return self.statement["predicate"]

    @property
    def subjects(self) -> list[dict[str, Any]]:
        return self.statement["subject"]


def verify(envelope: Any, trusted: Mapping[str, Ed25519PublicKey]) -> Verified:
    """The statement in `envelope` when a trusted key signed it and it is our kind of statement;
    AttestError saying what failed otherwise."""
    from cryptography.exceptions import InvalidSignature

    if not isinstance(envelope, dict) or not isinstance(envelope.get("signatures"), list):
        raise AttestError("not a DSSE envelope (payload, payloadType, signatures)")
    if envelope.get("payloadType") != PAYLOAD_TYPE:
        raise AttestError(f"payloadType {envelope.get('payloadType')!r} is not {PAYLOAD_TYPE}")
    try:
        body = base64.b64decode(str(envelope.get("payload", "")), validate=True)
    except ValueError:
        raise AttestError("the payload is not base64") from None
    signed = pae(PAYLOAD_TYPE, body)
    seen = []
    for entry in envelope["signatures"]:
        if not isinstance(entry, dict):
            continue
        kid = str(entry.get("keyid") or "")
        seen.append(kid[:16] or "(no keyid)")
        # keyid is a hint only: try the hinted key first, then every other pinned key.
        for candidate_id in sorted(trusted, key=lambda k: k != kid):
            try:
                trusted[candidate_id].verify(base64.b64decode(str(entry.get("sig", "")), validate=True), signed)
            except (InvalidSignature, ValueError):
                continue
            return Verified(_statement(body), candidate_id)
    if not seen:
        raise AttestError("the envelope holds no signature")
    raise AttestError(f"no signature verifies with a trusted key (signed by {', '.join(seen)}; pinned "
                      f"{', '.join(k[:16] for k in trusted) or 'none'})")


def _statement(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except ValueError:
        raise AttestError("the signed payload is not JSON") from None
    if not isinstance(doc, dict) or doc.get("_type") != STATEMENT_TYPE:
        raise AttestError(f"the signed payload is not an in-toto Statement v1 (_type {STATEMENT_TYPE})")
    if doc.get("predicateType") != PREDICATE_TYPE:
        raise AttestError(f"predicateType {doc.get('predicateType')!r} is not {PREDICATE_TYPE}: this is not "
                          "gradual-deploy preflight evidence")
    subjects = doc.get("subject")
    if not isinstance(subjects, list) or not all(
            isinstance(s, dict) and isinstance(s.get("digest"), dict) and s["digest"] for s in subjects):
        raise AttestError("the statement's subjects are not a list of named digests")
    if not isinstance(doc.get("predicate"), dict):
        raise AttestError("the statement has no predicate object")
    return doc


def subject_problems(subjects: Iterable[dict[str, Any]], given: Iterable[str]) -> tuple[list[str], list[str]]:
    """(problems, matched) for files an auditor holds: each given path must hash like a subject."""
    digests = {s.get("digest", {}).get("sha256"): s.get("name") for s in subjects}
    problems, matched = [], []
    for path in given:
        try:
            found = path_digest(path)
        except AttestError as exc:
            problems.append(str(exc))
            continue
        if found in digests:
            matched.append(f"{path} = {digests[found]}")
        else:
            problems.append(f"{path} (sha256 {found[:16]}...) matches no subject of the evidence")
    return problems, matched
