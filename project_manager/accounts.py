"""Users, passwords (argon2) and API tokens (random, stored as SHA-256), and who may see a project."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Table, insert, select, update
from sqlalchemy.exc import OperationalError

from tango.db import Database
from tango.jobs import utcnow

log = logging.getLogger(__name__)
_hasher = PasswordHasher()
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{1,63}$")
TOKEN_PREFIX = "tgo_"
LAST_USED_RESOLUTION = timedelta(seconds=60)


class AccountError(ValueError):
    pass


@dataclass(frozen=True)
class User:
    id: str
    username: str
    is_admin: bool


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Accounts:
    def __init__(self, db: Database, users: Table, tokens: Table, members: Table):
        self.db, self.users, self.tokens, self.members = db, users, tokens, members
        self._touched: dict[str, datetime] = {}  # token id -> when this process last refreshed it
        self._touch_lock = threading.Lock()

    def count(self) -> int:
        with self.db.begin() as conn:
            return len(conn.execute(select(self.users.c.id)).all())

    def create_user(self, *, username: str, password: str, is_admin: bool = False) -> User:
        if not USERNAME.match(username):
            raise AccountError("a username is 2-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        if len(password) < 8:
            raise AccountError("a password needs at least 8 characters")
        with self.db.begin() as conn:
            if conn.execute(select(self.users.c.id).where(self.users.c.username == username)).first():
                raise AccountError(f"the username {username!r} is taken")
            user_id = uuid.uuid4().hex
            conn.execute(insert(self.users).values(id=user_id, username=username, is_admin=is_admin,
                                                   password_hash=_hasher.hash(password), created_at=utcnow()))
        return User(user_id, username, is_admin)

    def authenticate(self, *, username: str, password: str) -> User | None:
        with self.db.begin() as conn:
            row = conn.execute(select(self.users).where(self.users.c.username == username)).first()
        if row is None:
            _hasher.hash(password)  # the same work either way: no user enumeration by timing
            return None
        try:
            _hasher.verify(row.password_hash, password)
        except (VerificationError, InvalidHashError):
            return None
        return User(row.id, row.username, row.is_admin)

    def issue_token(self, user: User, *, name: str = "api") -> tuple[str, str]:
        """(token id, the token itself: shown once, stored only as its hash)."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = uuid.uuid4().hex
        with self.db.begin() as conn:
            conn.execute(insert(self.tokens).values(id=token_id, user_id=user.id, token_hash=token_hash(token),
                                                    name=name[:128], created_at=utcnow(), revoked=False))
        return token_id, token

    def user_for_token(self, token: str) -> User | None:
        if not token.startswith(TOKEN_PREFIX):
            return None
        t, u = self.tokens, self.users
        with self.db.begin() as conn:
            row = conn.execute(select(u.c.id, u.c.username, u.c.is_admin, t.c.id.label("token_id"),
                                      t.c.last_used_at)
                               .join(t, t.c.user_id == u.c.id)
                               .where(t.c.token_hash == token_hash(token), t.c.revoked.is_(False))).first()
        if row is None:
            return None
        self._touch(row.token_id, row.last_used_at)
        return User(row.id, row.username, row.is_admin)

    def _touch(self, token_id: str, last: datetime | None) -> None:
        """Refresh last_used_at once a minute. Every request is authenticated, so this must not turn
        reads into writes: one thread per process claims the refresh, the others go on; under load
        on SQLite (one writer at a time) a herd of concurrent refreshes stalled every request."""
        now = utcnow()
        if last is not None and last.tzinfo is None:  # SQLite hands back naive UTC
            last = last.replace(tzinfo=timezone.utc)
        if last is not None and now - last <= LAST_USED_RESOLUTION:
            return
        with self._touch_lock:
            claimed = self._touched.get(token_id)
            if claimed is not None and now - claimed <= LAST_USED_RESOLUTION:
                return
            self._touched[token_id] = now
        try:
            with self.db.begin() as conn:
                conn.execute(update(self.tokens).where(self.tokens.c.id == token_id).values(last_used_at=now))
        except OperationalError as exc:  # bookkeeping: the request itself does not depend on it
            log.warning("could not record the use of token %s: %s", token_id, exc)

    def list_tokens(self, user: User) -> list[dict[str, Any]]:
        with self.db.begin() as conn:
            rows = conn.execute(select(self.tokens.c.id, self.tokens.c.name, self.tokens.c.created_at,
                                       self.tokens.c.last_used_at, self.tokens.c.revoked)
                                .where(self.tokens.c.user_id == user.id)).all()
        return [dict(r._mapping) for r in rows]

    def revoke_token(self, user: User, token_id: str) -> bool:
        with self.db.begin() as conn:
            return bool(conn.execute(update(self.tokens).where(self.tokens.c.id == token_id,
                                                                self.tokens.c.user_id == user.id)
                                     .values(revoked=True)).rowcount)

    def user_id(self, username: str) -> str | None:
        with self.db.begin() as conn:
            row = conn.execute(select(self.users.c.id).where(self.users.c.username == username)).first()
        return row.id if row else None
