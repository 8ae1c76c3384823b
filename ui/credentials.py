"""Who may log in to the web app: users with scrypt hashes of their passwords, kept off the command line.

An auth file holds one ``USER:HASH`` line per user, as ``galsearch passwd USER`` prints it (blank lines and
``#`` comments are skipped); like ssh with a private key, galsearch refuses a file that others may read.
``GALSEARCH_AUTH=USER:PASSWORD`` in the environment is the other way to give a login without ``ps``
showing it. Standard library only, so that the command line stays fast.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path

from galsearch.embedder.errors import GalsearchError

ENV_VAR = "GALSEARCH_AUTH"
# scrypt's cost: 2**15 x 8 x 128 bytes = 32 MiB and about 0.1 s of one core per check (werkzeug's choice)
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
MAX_SCRYPT_MEMORY = 2**30  # the most (128 N R bytes) a hash in a file may ask for: a typo must not eat memory
HASH_PATTERN = re.compile(r"scrypt:(\d+):(\d+):(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)")
USER_PATTERN = re.compile(r"[^\s:]{1,100}")  # no blanks (the login form strips them), no ':' (the separator)


class CredentialsError(GalsearchError):
    """An auth file, a user name or a ``USER:PASSWORD`` login cannot be used."""


def check_user(user: str) -> str:
    """``user`` if it can be a login name (1-100 characters, no blank and no ':'); else CredentialsError."""
    if not USER_PATTERN.fullmatch(user) or not user.isprintable():
        raise CredentialsError(
            f"a user name is 1-100 printable characters without blanks or ':', got {user[:100]!r}"
        )
    return user


def hash_password(password: str) -> str:
    """A salted scrypt hash of ``password``, as ``scrypt:N:R:P$SALT$HASH`` (base64)."""
    if not password:
        raise CredentialsError("a password cannot be empty")
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt:{SCRYPT_N}:{SCRYPT_R}:{SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, hashed: str) -> bool:
    """Whether ``password`` is the one ``hashed`` (from :func:`hash_password`) was made from."""
    n, r, p, salt, digest = _parse_hash(hashed)
    return hmac.compare_digest(_scrypt(password, salt, n, r, p, len(digest)), digest)


class Logins:
    """The users who may log in, each with the scrypt hash of their password."""

    def __init__(self, hashes: Mapping[str, str]):
        if not hashes:
            raise CredentialsError("no user may log in: give at least one USER:HASH")
        for user, hashed in hashes.items():
            check_user(user)
            _parse_hash(hashed)
        self._hashes = dict(hashes)
        # Checked against when the name is unknown, so that a wrong name takes as long as a wrong password.
        self._decoy = f"scrypt:{SCRYPT_N}:{SCRYPT_R}:{SCRYPT_P}${_b64(bytes(16))}${_b64(bytes(32))}"

    @classmethod
    def from_file(cls, path: str | Path) -> Logins:
        """The logins of an auth file of ``USER:HASH`` lines, refused if others may read it."""
        return cls(read_auth_file(path))

    @property
    def users(self) -> list[str]:
        """The names that may log in."""
        return list(self._hashes)

    def verify(self, user: str, password: str) -> bool:
        """Whether ``user`` may log in with ``password`` (as slow for an unknown name as for a known one)."""
        known = verify_password(password, self._hashes.get(user, self._decoy))
        return known and user in self._hashes

    async def check(self, user: str, password: str) -> bool:
        """:meth:`verify` in a worker thread, so that scrypt does not stall the server (Gradio's ``auth``)."""
        return await asyncio.to_thread(self.verify, user, password)


def read_auth_file(path: str | Path) -> dict[str, str]:
    """User name -> password hash from an auth file; CredentialsError (naming the line) if it is unusable."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"cannot read the auth file {path}: {exc}") from None
    if os.name == "posix" and mode & 0o077:
        raise CredentialsError(
            f"the auth file {path} may be read or changed by other users (mode {mode & 0o777:o}): "
            f"run `chmod 600 {path}`"
        )
    hashes: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        where = f"the auth file {path}, line {number}"
        if not sep or not HASH_PATTERN.fullmatch(hashed):  # the line is not echoed: it may hold a password
            raise CredentialsError(
                f"{where}: expected USER:HASH as `galsearch passwd {user[:100] or 'USER'}` prints it "
                "(a password itself does not belong in the file)"
            )
        try:
            check_user(user)
            _parse_hash(hashed)
        except CredentialsError as exc:
            raise CredentialsError(f"{where}: {exc}") from None
        if user in hashes:
            raise CredentialsError(f"{where}: the user {user!r} is already named on an earlier line")
        hashes[user] = hashed
    if not hashes:
        raise CredentialsError(f"the auth file {path} names no user: add lines from `galsearch passwd USER`")
    return hashes


def parse_login(text: str, source: str) -> tuple[str, str]:
    """``(user, password)`` from ``USER:PASSWORD`` text; ``source`` names where it came from in errors."""
    user, sep, password = text.partition(":")
    if not (sep and password):
        raise CredentialsError(f"{source} takes USER:PASSWORD, got no ':' or an empty password")
    try:
        return check_user(user), password
    except CredentialsError as exc:
        raise CredentialsError(f"{source}: {exc}") from None


def login_from_env(environ: Mapping[str, str] = os.environ) -> tuple[str, str] | None:
    """The login ``GALSEARCH_AUTH=USER:PASSWORD`` gives, or None when it is not set."""
    text = environ.get(ENV_VAR)
    return parse_login(text, ENV_VAR) if text else None


def _parse_hash(hashed: str) -> tuple[int, int, int, bytes, bytes]:
    match = HASH_PATTERN.fullmatch(hashed)
    if match is None:
        raise CredentialsError("a password hash looks like scrypt:N:R:P$SALT$HASH (from `galsearch passwd`)")
    n, r, p = (int(match[i]) for i in (1, 2, 3))
    try:
        salt, digest = base64.b64decode(match[4], validate=True), base64.b64decode(match[5], validate=True)
    except ValueError:
        salt = digest = b""
    if not (
        n > 1 and n & (n - 1) == 0 and r > 0 and 0 < p <= 16 and 128 * n * r <= MAX_SCRYPT_MEMORY
    ) or not (salt and 16 <= len(digest) <= 64):
        raise CredentialsError(
            f"a password hash needs N a power of 2, 128 N R at most {MAX_SCRYPT_MEMORY} bytes, P 1-16, a "
            f"base64 salt and a 16-64 byte base64 hash, got scrypt:{n}:{r}:{p}"
        )
    return n, r, p, salt, digest


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int = 32) -> bytes:
    memory = 128 * r * (n + p + 2)  # what scrypt needs, with room; above OpenSSL's default 32 MiB cap
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=memory + 2**20, dklen=length)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
