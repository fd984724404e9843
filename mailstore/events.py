"""Change events: what IMAP IDLE, the webmail and caches listen to.

    subscribe(callback, *, account_id=None) -> unsubscribe
    publish(change)            publish_on_commit(change)            close()

Implementation notes (invariants):

- Events are published only after the transaction that made the change commits
  (publish_on_commit), so a listener that reads the database sees the change.
  Nothing here opens or joins a Django transaction: the PostgreSQL bus uses a
  connection of its own.
- Events are hints, never the truth. A datagram can be dropped (a full
  receiver), a notification lost (a broker reconnecting), a change sent without
  its UIDs (too large, see Change.needs_resync). A listener re-reads the state it
  shows from the database when told something changed, and re-checks now and
  then on its own.
- Subscribers in the publishing process get the change directly and exactly
  once, on the publisher's thread; the copy that comes back over the bus carries
  this process's ORIGIN and is skipped.
- Changes from other processes arrive on one receiver thread per process,
  started by the first subscribe(); thousands of subscribers cost a tuple entry
  each, not a thread or a connection. Callbacks must be quick and must not
  block: asyncio code hops to its loop with `loop.call_soon_threadsafe`.
- publish() never raises because of the bus (it runs after a commit that an
  SMTP 250 depends on): bus failures are logged.

Backends, chosen by settings.MAILSUITE_EVENT_BUS:

- "local": one machine, no server. Each listening process binds a UNIX
  datagram socket DATA_DIR/bus/<uuid>.sock; publish sends one datagram to
  every socket there without blocking (a full receiver loses that datagram;
  the kernel queues at most net.unix.max_dgram_qlen per socket) and removes
  sockets nobody is bound to any more.
- "postgres" or a postgres:// URL: NOTIFY/LISTEN on channel CHANNEL, on the
  Django database or the given one; payloads stay within PostgreSQL's 8000
  bytes.
- "redis://host:port/db": Redis pub/sub on channel CHANNEL.
"""
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

log = logging.getLogger(__name__)

CHANNEL = "mailsuite_changes"
# PostgreSQL refuses NOTIFY payloads of 8000 bytes and more; the same bound keeps
# datagrams and Redis messages small.
MAX_PAYLOAD = 7999
MAX_UIDS = 100_000  # a received change naming more is treated as "resync"
READY_TIMEOUT = 2.0  # seconds the first subscribe() waits for the bus to be listening
POLL_SECONDS = 0.5  # how often the postgres/redis receivers look at the stop flag
RECONNECT_DELAYS = (0.1, 0.5, 1, 2, 5)
CONNECT_TIMEOUT = 2  # seconds; a publisher waits at most this for a broker that is down
SEND_PAUSE = 5.0  # seconds without sending after the bus failed

ORIGIN = uuid.uuid4().hex  # this process on the bus; renewed in a forked child


@dataclass(frozen=True)
class Change:
    kind: str  # "append", "flags", "expunge", "folder"; "opened": an IMAP worker read a large folder
    account_id: int
    folder_id: int | None = None
    uids: tuple = field(default=())
    modseq: int | None = None

    @property
    def needs_resync(self):
        """True when the UIDs this kind carries were left out (too many to send):
        re-read the folder instead of applying the change."""
        return self.kind in ("append", "flags", "expunge") and not self.uids


# --- the wire format: compact JSON, UIDs as an IMAP-style sequence set ---------


def _uid_set(uids):
    runs = []
    for uid in sorted(set(uids)):
        if runs and uid == runs[-1][1] + 1:
            runs[-1][1] = uid
        else:
            runs.append([uid, uid])
    return ",".join(str(a) if a == b else f"{a}:{b}" for a, b in runs)


def _parse_uid_set(text):
    """The UIDs of a set; none (resync) when it names more than MAX_UIDS."""
    uids = []
    for item in filter(None, text.split(",")):
        first, _, last = item.partition(":")
        run = range(int(first), int(last or first) + 1)
        if len(uids) + len(run) > MAX_UIDS:
            return ()
        uids.extend(run)
    return tuple(uids)


def encode(change, origin=None):
    """The bytes sent for `change`, at most MAX_PAYLOAD; too many UIDs are left out."""
    body = {"o": origin or ORIGIN, "k": change.kind, "a": change.account_id, "f": change.folder_id,
            "u": _uid_set(change.uids), "m": change.modseq}
    data = json.dumps(body, separators=(",", ":")).encode()
    if len(data) > MAX_PAYLOAD:
        body["u"] = ""
        data = json.dumps(body, separators=(",", ":")).encode()
    return data


def decode(data):
    """(origin, Change) from encode()'s bytes; ValueError when they are not that."""
    try:
        body = json.loads(data)
        change = Change(str(body["k"]), int(body["a"]), _optional_int(body["f"]),
                        _parse_uid_set(body["u"]), _optional_int(body["m"]))
        return str(body["o"]), change
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise ValueError(f"not a change event: {error}") from None


def _optional_int(value):
    return None if value is None else int(value)


# --- subscribers ----------------------------------------------------------------

# account_id (None: every account) -> callbacks. Tuples are replaced, never
# changed, so dispatch reads them without the lock.
_subscribers = {}
_lock = threading.Lock()


def subscribe(callback, *, account_id=None):
    """Call `callback(change)` for every published change (only `account_id`'s when
    given); returns an unsubscribe function.

    Changes made in this process are delivered on the publishing thread, changes
    from other processes on this process's receiver thread, started here on first
    use. Callbacks must not block; treat a change as a hint and re-read state.
    """
    with _lock:
        _subscribers[account_id] = _subscribers.get(account_id, ()) + (callback,)
    _start_receiver()

    def unsubscribe():
        with _lock:
            callbacks = list(_subscribers.get(account_id, ()))
            if callback in callbacks:
                callbacks.remove(callback)
                if callbacks:
                    _subscribers[account_id] = tuple(callbacks)
                else:
                    del _subscribers[account_id]

    return unsubscribe


def _dispatch(change):
    callbacks = _subscribers.get(None, ())
    if change.account_id is not None:
        callbacks += _subscribers.get(change.account_id, ())
    for callback in callbacks:
        try:
            callback(change)
        except Exception:
            log.exception("change listener failed for %r", change)


_send_paused_until = 0.0


def publish(change):
    """Deliver `change` to this process's subscribers, then to other processes."""
    global _send_paused_until
    _dispatch(change)
    if time.monotonic() < _send_paused_until:
        return  # the bus failed a moment ago: don't make every delivery wait for it
    try:
        backend = _get_backend()
        backend.send(encode(change))
    except Exception:
        _send_paused_until = time.monotonic() + SEND_PAUSE
        log.exception("change bus: could not publish %r; events to other processes paused for %ss",
                      change, SEND_PAUSE)


def publish_on_commit(change):
    transaction.on_commit(lambda: publish(change))


# --- the process's bus: one backend, one receiver thread ------------------------

_state_lock = threading.Lock()
_backend = None
_receiver = None
_stop = threading.Event()


def backend_for(value):
    """The backend named by a MAILSUITE_EVENT_BUS value."""
    if value == "local":
        return LocalBus(Path(settings.DATA_DIR) / "bus")
    if value == "postgres":
        return PostgresBus(_django_postgres_params())
    if value.startswith(("postgres://", "postgresql://")):
        return PostgresBus({"conninfo": value})
    if value.startswith(("redis://", "rediss://")):
        return RedisBus(value)
    raise ImproperlyConfigured(f"MAILSUITE_EVENT_BUS={value!r}: expected local, postgres or redis://host:port/db")


def _get_backend():
    global _backend
    with _state_lock:
        if _backend is None:
            _backend = backend_for(settings.MAILSUITE_EVENT_BUS)
        return _backend


def _start_receiver():
    global _receiver
    backend = _get_backend()
    with _state_lock:
        if _receiver is not None:
            return
        ready = threading.Event()
        _receiver = threading.Thread(target=_receive, args=(backend, _stop, ready),
                                     name="mailsuite-events", daemon=True)
        _receiver.start()
    if not ready.wait(READY_TIMEOUT):
        log.warning("change bus: %s not listening after %ss; still trying", backend, READY_TIMEOUT)


def _receive(backend, stop, ready):
    """The receiver thread: listen, deliver others' changes, reconnect on failure."""
    failures = 0

    def connected():
        nonlocal failures
        failures = 0
        ready.set()

    def deliver(data):
        if not stop.is_set():  # after close(), nothing more reaches the next subscribers
            _deliver_remote(data)

    while not stop.is_set():
        try:
            backend.listen(connected, stop, deliver)
        except Exception:
            delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
            failures += 1
            log.warning("change bus: %s listener failed; retrying in %ss", backend, delay, exc_info=True)
            stop.wait(delay)


def _deliver_remote(data):
    try:
        origin, change = decode(data)
    except ValueError as error:
        log.warning("change bus: ignoring a malformed event: %s", error)
        return
    if origin != ORIGIN:
        _dispatch(change)


def close():
    """Stop listening, release sockets and connections, forget every subscriber
    (tests and shutdown). The next subscribe() or publish() starts afresh."""
    global _backend, _receiver, _stop, _send_paused_until
    _send_paused_until = 0.0
    with _lock:
        _subscribers.clear()
    with _state_lock:
        backend, receiver, stop = _backend, _receiver, _stop
        _backend, _receiver, _stop = None, None, threading.Event()
    stop.set()
    if backend is not None:
        backend.wake()
    if receiver is not None:
        receiver.join(POLL_SECONDS * 4)
    if backend is not None:
        backend.close()


def _forget_after_fork():
    """A forked child is a new process on the bus: no thread, no sockets of its own yet."""
    global ORIGIN, _backend, _receiver, _stop, _state_lock, _lock
    ORIGIN = uuid.uuid4().hex
    _backend, _receiver, _stop = None, None, threading.Event()
    _state_lock, _lock = threading.Lock(), threading.Lock()
    _subscribers.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


# --- backends: send(bytes), listen(connected, stop, deliver), wake(), close() ----


class LocalBus:
    """UNIX datagram sockets in one directory: one per listening process."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # sun_path holds 107 bytes; a deep data dir is reached through its descriptor.
        self._dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        self._prefix = str(self.directory)
        if len(os.fsencode(self._prefix)) > 60:
            self._prefix = f"/proc/self/fd/{self._dir_fd}"
        # One sending socket per listener: a queued datagram counts against its
        # sender's buffer until read, so a shared socket would let one stuck
        # listener silence the others.
        self._senders = {}
        self._send_lock = threading.Lock()
        self._own_name = None

    def __str__(self):
        return f"local bus in {self.directory}"

    def _address(self, name):
        return f"{self._prefix}/{name}"

    def send(self, data):
        with self._send_lock:
            names = {name for name in os.listdir(self._dir_fd) if name.endswith(".sock")}
            names.discard(self._own_name)
            for gone in self._senders.keys() - names:
                self._forget(gone)
            for name in names:
                self._send_to(name, data)

    def _send_to(self, name, data):
        try:
            sender = self._senders.get(name)
            if sender is None:
                sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sender.setblocking(False)
                self._senders[name] = sender
                sender.connect(self._address(name))
            sender.send(data)
        except BlockingIOError:
            log.debug("change bus: %s is full; event dropped for it", name)
        except (ConnectionRefusedError, FileNotFoundError):  # its process is gone
            self._forget(name)
            self._remove(name)
        except OSError as error:
            self._forget(name)
            log.warning("change bus: cannot send to %s: %s", name, error)

    def _forget(self, name):
        sender = self._senders.pop(name, None)
        if sender is not None:
            sender.close()

    def _remove(self, name):
        try:
            os.unlink(name, dir_fd=self._dir_fd)
        except FileNotFoundError:
            pass

    def listen(self, connected, stop, deliver):
        # A new name for every bind: a publisher still connected to an earlier
        # socket of this process then removes that one, never this.
        name = f"{uuid.uuid4().hex}.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._remove(name)
            sock.bind(self._address(name))
            self._own_name = name
            connected()
            while not stop.is_set():
                batch = [sock.recv(MAX_PAYLOAD + 1)]
                # Empty the kernel queue before the callbacks run, so a burst
                # overflows it as rarely as possible.
                while True:
                    try:
                        batch.append(sock.recv(MAX_PAYLOAD + 1, socket.MSG_DONTWAIT))
                    except BlockingIOError:
                        break
                for data in batch:
                    if data:  # an empty datagram is wake()
                        deliver(data)
        finally:
            sock.close()
            if self._own_name == name:
                self._remove(name)
                self._own_name = None

    def wake(self):
        if self._own_name:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as waker:
                try:
                    waker.sendto(b"", socket.MSG_DONTWAIT, self._address(self._own_name))
                except OSError:
                    pass  # a full queue wakes the receiver anyway

    def close(self):
        with self._send_lock:
            for sender in self._senders.values():
                sender.close()
            self._senders.clear()
        os.close(self._dir_fd)


def _django_postgres_params():
    from django.db import connections

    connection = connections["default"]
    if connection.vendor != "postgresql":
        raise ImproperlyConfigured(
            "MAILSUITE_EVENT_BUS=postgres needs a PostgreSQL DATABASE_URL; "
            "set MAILSUITE_EVENT_BUS=local, a postgres:// URL or redis://host:port/db"
        )
    params = connection.get_connection_params()
    for django_only in ("cursor_factory", "context", "prepare_threshold", "pool"):
        params.pop(django_only, None)
    return params


class PostgresBus:
    """NOTIFY/LISTEN on CHANNEL, over connections of its own (never Django's, so
    never inside a transaction)."""

    def __init__(self, params):
        import psycopg

        self._psycopg = psycopg
        self._params = params
        self._send_lock = threading.Lock()
        self._sender = None
        self.listener_pid = None

    def __str__(self):
        return "postgres bus"

    def _connect(self):
        return self._psycopg.connect(**self._params, autocommit=True, connect_timeout=CONNECT_TIMEOUT)

    def send(self, data):
        with self._send_lock:
            for attempt in (1, 2):  # a connection that died while idle is reopened once
                try:
                    if self._sender is None or self._sender.closed:
                        self._sender = self._connect()
                    self._sender.execute("SELECT pg_notify(%s, %s)", (CHANNEL, data.decode("ascii")))
                    return
                except self._psycopg.OperationalError:
                    self._drop_sender()
                    if attempt == 2:
                        raise

    def _drop_sender(self):
        if self._sender is not None:
            self._sender.close()
            self._sender = None

    def listen(self, connected, stop, deliver):
        with self._connect() as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            self.listener_pid = conn.info.backend_pid  # the server process to look for in pg_stat_activity
            connected()
            while not stop.is_set():
                for notify in conn.notifies(timeout=POLL_SECONDS):
                    deliver(notify.payload.encode("ascii"))
                    if stop.is_set():
                        break

    def wake(self):
        pass  # the receiver looks at the stop flag every POLL_SECONDS

    def close(self):
        with self._send_lock:
            self._drop_sender()


class RedisBus:
    """Redis pub/sub on CHANNEL. The listening connection is named in CLIENT LIST."""

    def __init__(self, url):
        import redis

        options = {"socket_connect_timeout": CONNECT_TIMEOUT, "socket_timeout": CONNECT_TIMEOUT}
        self._client = redis.Redis.from_url(url, **options)
        self.listener_name = f"mailsuite-events-{uuid.uuid4().hex[:12]}"
        self._listener_client = redis.Redis.from_url(url, client_name=self.listener_name, **options)

    def __str__(self):
        return "redis bus"

    def send(self, data):
        self._client.publish(CHANNEL, data)

    def listen(self, connected, stop, deliver):
        pubsub = self._listener_client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(CHANNEL)
            connected()
            while not stop.is_set():
                message = pubsub.get_message(timeout=POLL_SECONDS)
                if message is not None and message["type"] == "message":
                    deliver(message["data"])
        finally:
            pubsub.close()

    def wake(self):
        pass  # the receiver looks at the stop flag every POLL_SECONDS

    def close(self):
        self._client.close()
        self._listener_client.close()
