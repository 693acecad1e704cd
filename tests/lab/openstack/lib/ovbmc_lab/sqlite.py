"""SQLite that does not fail with "database is locked" under threads.

The lab keeps every service's database in SQLite, where a real cloud has
MySQL.  oslo.db begins SQLite transactions with a deferred ``BEGIN``: a
transaction takes a shared lock when it first reads and asks for the write
lock only when it first writes.  Two threads of one service doing that at
once deadlock, and SQLite resolves it by failing one of them at once, no
matter what busy timeout is set.  Nova's API threads, its periodic tasks and
the RPC handlers of its services in one process do exactly that.

Importing this module before any engine exists makes every SQLite
transaction start with ``BEGIN IMMEDIATE`` (take the write lock first, so
writers queue instead of deadlocking) and wait for the lock for up to
``OVBMC_LAB_SQLITE_BUSY_MS`` (default 30 s).  The listeners are registered
on SQLAlchemy's classes, so they run before the per-engine listeners that
oslo.db adds.  Other databases are left alone.
"""
import os

from sqlalchemy import event
from sqlalchemy import pool
from sqlalchemy.engine import Engine

BUSY_MS = int(os.environ.get("OVBMC_LAB_SQLITE_BUSY_MS", "30000"))


def _is_sqlite(dbapi_connection):
    return "sqlite" in type(dbapi_connection).__module__


@event.listens_for(pool.Pool, "connect")
def _wait_for_locks(dbapi_connection, _record):
    if _is_sqlite(dbapi_connection):
        dbapi_connection.execute("PRAGMA busy_timeout = %d" % BUSY_MS)


@event.listens_for(Engine, "begin")
def _begin_immediate(conn):
    if conn.dialect.name != "sqlite" or "in_transaction" in conn.info:
        return
    conn.exec_driver_sql("BEGIN IMMEDIATE")
    # oslo.db's own "begin" listener issues a plain BEGIN unless it finds
    # this mark: one transaction, not two
    conn.info["in_transaction"] = True
