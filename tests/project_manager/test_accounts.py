"""Tokens: the use of a token is recorded once a minute, by one thread, never by every request."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import event, update

from project_manager.runtime import build_runtime
from tango.jobs import utcnow


def test_token_use_is_recorded_once_per_minute_however_many_requests(settings):
    runtime = build_runtime(settings)
    runtime.migrate()
    accounts = runtime.accounts
    user = accounts.create_user(username="ada", password="correct horse")
    token_id, token = accounts.issue_token(user)
    writes: list[str] = []

    @event.listens_for(runtime.db.engine, "before_cursor_execute")
    def count(conn, cursor, statement, *args):  # noqa: ANN001, ANN002
        if statement.lstrip().upper().startswith("UPDATE PM_TOKENS"):
            writes.append(statement)

    assert accounts.user_for_token(token) == user
    assert len(writes) == 1 and accounts.list_tokens(user)[0]["last_used_at"] is not None
    with ThreadPoolExecutor(16) as pool:  # fresh: nobody writes
        assert all(u == user for u in pool.map(lambda _: accounts.user_for_token(token), range(64)))
    assert len(writes) == 1

    # A minute later (in the table and in this process's memory), a burst of requests writes once.
    stale = utcnow() - timedelta(minutes=2)
    with runtime.db.begin() as conn:
        conn.execute(update(accounts.tokens).values(last_used_at=stale))
    accounts._touched[token_id] = stale
    writes.clear()
    with ThreadPoolExecutor(16) as pool:
        assert all(u == user for u in pool.map(lambda _: accounts.user_for_token(token), range(64)))
    assert len(writes) == 1
    assert accounts.user_for_token("tgo_not-a-token") is None
    runtime.db.dispose()
