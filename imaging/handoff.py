"""Database connections handed from one DICOM server thread to the next.

pynetdicom serves every association on threads of its own (the association's, and the
reading thread that serves its C-STOREs, imaging/dicom/accel/direct.py), and Django keeps
one connection per thread: every association used to open a PostgreSQL connection, or two,
and close them when it ended. A new backend is forked, authenticated, has its time zone set
and fills its catalog caches on its first statements: about 5 ms on the way to the
association's acceptance and as much again before its first C-STORE's answer, on every
association. A modality or gateway that opens one association per study paid it for each
study (bench/RESULTS.md, "one association per study").

A thread done with its connection now gives it back here (`give_back`), and the next thread
about to use the database takes it (`take`), as a pool would. What is handed on is Django's
connection object, whole, to one thread at a time: only one open in autocommit, outside any
transaction, with no error since its last commit, and young enough for CONN_MAX_AGE; it is
checked again as Django checks a kept connection (close_if_unusable_or_obsolete: its age,
and with CONN_HEALTH_CHECKS a round trip before its first use), except that one given back
less than FRESH_SECONDS ago, with nothing come in on it since (alliance/db_fresh.py: a
restarted server's notice makes it checked), is not sent that round trip: the thread before
used it without error a moment ago, and an association takes two in turn (its own thread's,
then its reading thread's), two round trips on every association. At most `keep` wait; the
others are closed as before. PostgreSQL only (an SQLite connection is a file opened), and
never the main thread's (tests call the services there inside their own transactions).
"""

from __future__ import annotations

import threading

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.backends.base.base import BaseDatabaseWrapper

from alliance.db_fresh import check_unless_fresh, used_well


class Handoff:
    def __init__(self, keep: int = 4, alias: str = DEFAULT_DB_ALIAS) -> None:
        self.keep = keep
        self.alias = alias
        self._idle: list[BaseDatabaseWrapper] = []
        self._lock = threading.Lock()

    def take(self) -> None:
        """Before this thread uses the database: when it has no open connection, give it one
        that another thread gave back (if any waits)."""
        if threading.current_thread() is threading.main_thread():
            return
        if connections[self.alias].connection is not None:
            return
        with self._lock:
            if not self._idle:
                return
            wrapper = self._idle.pop()
        connections[self.alias] = wrapper
        check_unless_fresh(wrapper)

    def give_back(self) -> None:
        """This thread is done with the database (it may end): its connection waits for the
        next thread, or is closed when it cannot be handed on or enough wait."""
        wrapper = connections[self.alias]
        if wrapper.connection is None:
            return
        if threading.current_thread() is threading.main_thread() or not self._reusable(wrapper):
            wrapper.close()
            return
        with self._lock:
            if len(self._idle) < self.keep:
                if not wrapper.allow_thread_sharing:
                    wrapper.inc_thread_sharing()  # one thread at a time uses it: the one that took it
                del connections[self.alias]  # this thread's next use starts from take()
                used_well(wrapper)
                self._idle.append(wrapper)
                return
        wrapper.close()

    def open_one(self) -> None:
        """Connect one for the first thread to take (the server starts): its association is
        then accepted without waiting for a backend. Nothing when the database cannot be
        reached now, or is not PostgreSQL: the first thread connects as it would have."""
        wrapper = connections.create_connection(self.alias)
        if wrapper.vendor != "postgresql":
            return
        try:
            wrapper.ensure_connection()
        except DatabaseError:
            return
        wrapper.inc_thread_sharing()
        used_well(wrapper)
        with self._lock:
            self._idle.append(wrapper)

    def close(self) -> None:
        """Close every connection waiting (the server stops)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for wrapper in idle:
            wrapper.close()

    def waiting(self) -> int:
        with self._lock:
            return len(self._idle)

    @staticmethod
    def _reusable(wrapper: BaseDatabaseWrapper) -> bool:
        if wrapper.vendor != "postgresql" or wrapper.in_atomic_block or wrapper.errors_occurred:
            return False
        if wrapper.get_autocommit() != wrapper.settings_dict["AUTOCOMMIT"]:
            return False
        wrapper.close_if_unusable_or_obsolete()  # past CONN_MAX_AGE: closed here
        return wrapper.connection is not None
