"""SQLite for several daemons writing one file.

Write transactions (Django's atomic blocks, which begin IMMEDIATE) first take an
exclusive flock on a lock file beside the database. The kernel hands the lock to the
next waiter the moment it is released, where SQLite's own busy handler would poll
and sleep for up to 100 ms: with SMTP workers in several processes that turned
lock handovers into the biggest cost of delivery. Autocommit statements outside
atomic blocks still rely on the busy timeout.
"""
import fcntl
import os

from django.db.backends.sqlite3 import base


class DatabaseWrapper(base.DatabaseWrapper):
    _lock_fd = None
    _lock_held = False

    def _lock_path(self):
        name = str(self.settings_dict["NAME"])
        if name == ":memory:" or name.startswith("file:"):
            return None
        return name + ".writer-lock"

    def get_new_connection(self, conn_params):
        connection = super().get_new_connection(conn_params)
        path = self._lock_path()
        if path and self._lock_fd is None:
            # One open file description per connection: flock excludes other
            # connections in this process as well as other processes.
            self._lock_fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        return connection

    def _acquire_writer_lock(self):
        if self._lock_fd is not None and not self._lock_held:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            self._lock_held = True

    def _release_writer_lock(self):
        if self._lock_held:
            self._lock_held = False
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _start_transaction_under_autocommit(self):
        self._acquire_writer_lock()
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._release_writer_lock()
            raise

    def _commit(self):
        try:
            super()._commit()
        finally:
            self._release_writer_lock()

    def _rollback(self):
        try:
            super()._rollback()
        finally:
            self._release_writer_lock()

    def _close(self):
        try:
            super()._close()
        finally:
            self._release_writer_lock()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
