"""Every operator change to the outbound queue and to mail routes goes through here.

The admin, `manage.py queue`, `manage.py relay` and tests call these functions. Each one
is atomic and raises an accounts.errors exception (InvalidInput, NotFound, Conflict) with
a one-line reason on bad input; side effects (waking workers, sending DSNs) run after
commit.

Queue rules:
- Only unfinished recipients change: delivered and bounced rows are history.
- A delivery worker owns a recipient while its lease is live. retry_now() and release()
  leave such a recipient alone: it is being tried right now. hold(), bounce() and
  delete_messages() are the operator overruling the queue, so they apply anyway and take
  the lease away. The worker then cannot record its attempt (queue.record() finds its
  lease gone and logs that). If that attempt had already handed the message to the next
  hop, the recipient gets the mail although the queue shows it held or bounced, and a
  held recipient released later may get it twice: the operator's decision wins over an
  attempt already in flight.
- Ids are handled in chunks, so a selection of the whole queue stays within the
  database's limit on query parameters.

Routes are SmartHost rows: domain "" is the global smart host (MAILSUITE_RELAYHOST is
the fallback when there is none); a row with a domain is a transport (mail for that
domain goes to the given host instead of its MX), or with accept_relay a relay domain
(we also accept mail for it from anyone and pass it on). Passwords are stored encrypted
(mailsuite.lib.secrets) and given back to nobody but the SMTP client.
"""
import functools
import ipaddress
import logging
import re

from django.db import transaction
from django.db.models import Count, Max, Q

from accounts.errors import Conflict, InvalidInput, NotFound
from accounts.models import Domain, DomainAlias
from mailsuite.lib import secrets
from mailsuite.lib.addresses import AddressError, normalize_address, normalize_domain
from mta import delivery, queue
from mta.models import DeliveryAttempt, QueuedMessage, QueuedRecipient, SmartHost

log = logging.getLogger(__name__)

State = QueuedRecipient.State
PENDING = (State.QUEUED, State.DEFERRED)
UNFINISHED = (State.QUEUED, State.DEFERRED, State.HELD)
CHUNK = 500  # ids per query: well inside SQLite's and PostgreSQL's parameter limits
BOUNCE_STATUS = "5.0.0"
MAX_REASON = 500
MAX_PASSWORD = 256  # encrypted, it must fit SmartHost.password (500)
MAX_LISTED_RECIPIENTS = 100_000


def _operator_change(action):
    """Audit the call (accounts.actions.audit) and, with an `acting_user`, require a superadmin:
    the queue and the routes are server-wide, no domain admin's."""

    def decorate(function):
        @functools.wraps(function)
        def wrapper(*args, acting_user=None, **kwargs):
            from accounts.actions import audit, require_superadmin  # accounts.actions imports mta

            require_superadmin(acting_user, "change the queue or mail routes")
            with transaction.atomic():
                result = function(*args, **kwargs)
                if result != 0:  # no recipient changed: nothing to record
                    obj, states = _audited(result, args, kwargs)
                    audit(acting_user, action, obj, **states)
                return result

        return wrapper

    return decorate


def _audited(result, args, kwargs):
    """(object, {"before"/"after": …}) for the audit entry of an operator change."""
    if isinstance(result, SmartHost):
        return result, {"after": {
            "route": route_kind(result), "domain": result.domain, "next_hop": format_next_hop(result.host, result.port),
            "tls": result.tls, "username": result.username,
        }}
    if result is None:  # a route removed
        domain = args[0] if args else kwargs.get("domain", "")
        return f"route for {domain}" if domain else "smart host", {"before": {"domain": domain}}
    ids = {name: list(value)[:100] for name, value in
           (("recipient_ids", args[0] if args else kwargs.get("recipient_ids", ())),
            ("message_ids", kwargs.get("message_ids", ()))) if value}
    return f"{result} queue entr{'y' if result == 1 else 'ies'}", {"after": {"changed": result, **ids}}


def _chunks(ids):
    ids = list(dict.fromkeys(ids))
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


def _domain_name(name):
    try:
        return normalize_domain(name)
    except AddressError as error:
        raise InvalidInput(str(error)) from None


def _lease_free(at):
    return Q(lease_until__isnull=True) | Q(lease_until__lt=at)


# Finding messages -------------------------------------------------------------------


def find_messages(queue_ids):
    """The QueuedMessage pks for these queue ids (as logs and `queue list` show them).

    Raises NotFound naming the first id that matches nothing.
    """
    wanted = {}
    for text in queue_ids:
        wanted[text.strip().upper()] = text
    found = {}
    for chunk in _chunks(list(wanted)):
        for pk, queue_id in QueuedMessage.objects.filter(queue_id__in=chunk).values_list("pk", "queue_id"):
            found.setdefault(queue_id, []).append(pk)
    for key, text in wanted.items():
        if key not in found:
            raise NotFound(f"no queued message with id {text.strip() or repr(text)}")
    return [pk for key in wanted for pk in found[key]]


def recipients_of(message_ids, *, address=None):
    """The QueuedRecipient pks of these messages, or only those to `address`."""
    ids = []
    for chunk in _chunks(message_ids):
        rows = QueuedRecipient.objects.filter(message_id__in=chunk)
        if address is not None:
            rows = rows.filter(address__iexact=address.strip())
        ids += rows.order_by("pk").values_list("pk", flat=True)
    return ids


def _selected(recipient_ids, message_ids):
    return [*recipient_ids, *recipients_of(message_ids)] if message_ids else list(recipient_ids)


# Queue operations -------------------------------------------------------------------


def _change(recipient_ids, *, states, respect_leases, **fields):
    """Set `fields` on those of the recipients that are in `states` (and, with
    respect_leases, not leased by a live worker). Returns [(pk, domain)] of the changed rows.

    Runs inside the caller's transaction; the rows are locked while they are looked at,
    so a worker recording an outcome waits for us or we see its result.
    """
    at = queue.now()
    changed = []
    for chunk in _chunks(recipient_ids):
        rows = QueuedRecipient.objects.select_for_update().filter(pk__in=chunk, state__in=states)
        if respect_leases:
            rows = rows.filter(_lease_free(at))
        found = list(rows.order_by("pk").values_list("pk", "domain"))
        if found:
            QueuedRecipient.objects.filter(pk__in=[pk for pk, _ in found]).update(**fields)
            changed += found
    return changed


def _kick_after_commit(changed):
    domains = sorted({domain for _, domain in changed})
    if domains:
        transaction.on_commit(lambda: queue.kick(domains))


@_operator_change("queue.retry")
@transaction.atomic
def retry_now(recipient_ids=(), *, message_ids=()):
    """Make queued and deferred recipients due now (their attempt count stays). Held,
    finished and in-flight recipients are left alone. Returns how many changed."""
    changed = _change(
        _selected(recipient_ids, message_ids), states=PENDING, respect_leases=True, next_attempt_at=queue.now()
    )
    _kick_after_commit(changed)
    log.info("operator: retry now for %d recipient(s)", len(changed))
    return len(changed)


@_operator_change("queue.hold")
@transaction.atomic
def hold(recipient_ids=(), *, message_ids=()):
    """Stop delivery to queued and deferred recipients until release(). Returns how many changed."""
    changed = _change(
        _selected(recipient_ids, message_ids), states=PENDING, respect_leases=False,
        state=State.HELD, lease_owner="", lease_until=None,
    )
    log.info("operator: held %d recipient(s)", len(changed))
    return len(changed)


@_operator_change("queue.release")
@transaction.atomic
def release(recipient_ids=(), *, message_ids=()):
    """Put held recipients back on the queue, due now. Returns how many changed."""
    changed = _change(
        _selected(recipient_ids, message_ids), states=(State.HELD,), respect_leases=True,
        state=State.QUEUED, next_attempt_at=queue.now(),
    )
    _kick_after_commit(changed)
    log.info("operator: released %d recipient(s)", len(changed))
    return len(changed)


def _bounce_reason(reason):
    text = (reason or "").strip()
    if not text:
        raise InvalidInput("give a reason for the bounce: the sender reads it")
    if len(text) > MAX_REASON:
        raise InvalidInput(f"the reason is longer than {MAX_REASON} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise InvalidInput("the reason must be one line of text")
    return text


@_operator_change("queue.bounce")
@transaction.atomic
def bounce(recipient_ids=(), reason="", *, message_ids=()):
    """Give up on unfinished recipients now: bounced with status 5.0.0 and `reason` as the
    diagnostic; after commit the sender gets a failure DSN (as RFC 3461 NOTIFY allows).
    Returns how many changed."""
    reason = _bounce_reason(reason)
    changed = _change(
        _selected(recipient_ids, message_ids), states=UNFINISHED, respect_leases=False,
        state=State.BOUNCED, status=BOUNCE_STATUS, last_error=reason, remote_mta="",
        lease_owner="", lease_until=None,
    )
    bounced = []
    for chunk in _chunks([pk for pk, _ in changed]):
        bounced += QueuedRecipient.objects.select_related("message__blob").filter(pk__in=chunk)
    if bounced:
        transaction.on_commit(lambda: delivery.notify(bounced), robust=True)
    log.info("operator: bounced %d recipient(s): %s", len(changed), reason)
    return len(changed)


@_operator_change("queue.delete")
@transaction.atomic
def delete_messages(message_ids):
    """Remove messages from the queue with their recipients and attempt log, whatever their
    state: nobody is told. The message bytes stay (mailboxes may share them); the blob
    sweep removes bytes nothing refers to. Returns how many messages were removed."""
    removed = 0
    for chunk in _chunks(message_ids):
        DeliveryAttempt.objects.filter(recipient__message_id__in=chunk).delete()
        QueuedRecipient.objects.filter(message_id__in=chunk).delete()
        removed += QueuedMessage.objects.filter(pk__in=chunk).delete()[1].get(QueuedMessage._meta.label, 0)
    log.info("operator: deleted %d queued message(s)", removed)
    return removed


def flush(domain=None):
    """Try everything pending for `domain` (a name; "" = local mailbox retries), or for
    every destination, now and in this process, as `postqueue -f` does: deferred
    recipients are made due first; held ones stay held.

    Not atomic: it delivers over the network, so call it outside a transaction. Returns
    {domain: {"tried": n, "delivered": n, "deferred": n, "bounced": n}}.
    """
    if domain:
        domain = _domain_name(domain)
    at = queue.now()
    with transaction.atomic():
        pending = QueuedRecipient.objects.filter(state__in=PENDING, next_attempt_at__gt=at).filter(_lease_free(at))
        if domain is not None:
            pending = pending.filter(domain=domain)
        pending.update(next_attempt_at=at)
    domains = [domain] if domain is not None else queue.due_domains(limit=None)
    results = {}
    for name in domains:
        # Attempts are counted by id, not time: ids only grow, and a clock may stand still.
        before = DeliveryAttempt.objects.aggregate(last=Max("pk"))["last"] or 0
        tried = delivery.deliver_domain(name)
        outcomes = dict(
            DeliveryAttempt.objects.filter(recipient__domain=name, pk__gt=before)
            .order_by()
            .values_list("outcome")
            .annotate(n=Count("pk"))
        )
        results[name] = {
            "tried": tried, **{outcome: outcomes.get(outcome, 0) for outcome in ("delivered", "deferred", "bounced")}
        }
    return results


# Routes: smart host, transports, relay domains ---------------------------------------


def route_kind(route):
    """"smarthost", "transport" or "relay" for a SmartHost row."""
    if not route.domain:
        return "smarthost"
    return "relay" if route.accept_relay else "transport"


def _next_hop_host(host):
    text = (host or "").strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if not text:
        raise InvalidInput("the next hop's host name is empty")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    try:
        # Hosts are looked up in DNS (mta.routing.addresses): they must be fully qualified.
        return normalize_domain(text)
    except AddressError as error:
        raise InvalidInput(f"next hop: {error}") from None


def _port(port):
    try:
        number = int(port)
    except (TypeError, ValueError):
        raise InvalidInput(f"{port!r} is not a port number") from None
    if not 1 <= number <= 65535:
        raise InvalidInput(f"port {number} is out of range (1-65535)")
    return number


_HOST_PORT = re.compile(r"^(?:\[(?P<literal>[^\]]+)\]|(?P<host>[^:\[\]]+))(?::(?P<port>[^:]*))?$")


def parse_next_hop(text, *, default_port=25):
    """`host`, `host:port`, `192.0.2.1:25` or `[2001:db8::1]:25` as (host, port)."""
    match = _HOST_PORT.match((text or "").strip())
    if not match:
        raise InvalidInput(f"{text!r} is not HOST or HOST:PORT (write IPv6 addresses in brackets)")
    host = _next_hop_host(match["literal"] or match["host"])
    return host, _port(match["port"]) if match["port"] is not None else default_port


def _tls(tls, port, username):
    if tls in (None, ""):
        if port == 465:
            return SmartHost.TLS.IMPLICIT
        return SmartHost.TLS.REQUIRED if username else SmartHost.TLS.OPPORTUNISTIC
    if tls not in SmartHost.TLS.values:
        raise InvalidInput(f"unknown TLS mode {tls!r} (one of {', '.join(SmartHost.TLS.values)})")
    if username and tls in (SmartHost.TLS.OPPORTUNISTIC, SmartHost.TLS.NONE):
        # Opportunistic STARTTLS can be stripped by anyone on the path: the password would go in clear.
        raise InvalidInput("sending a password needs TLS: use TLS mode 'starttls' or 'implicit'")
    return tls


def _stored_password(username, password, existing):
    """The value for SmartHost.password: encrypted, kept (password None, same username) or empty."""
    if not username:
        if password:
            raise InvalidInput("a password needs a username")
        return ""
    if password is None:
        if existing is not None and existing.username == username and existing.password:
            return existing.password
        raise InvalidInput(f"a password is needed to log in as {username}")
    if not password:
        raise InvalidInput(f"a password is needed to log in as {username}")
    if len(password) > MAX_PASSWORD:
        raise InvalidInput(f"the password is longer than {MAX_PASSWORD} characters")
    if any(c in password for c in "\r\n\0"):
        raise InvalidInput("the password may not contain line breaks or NUL")
    return secrets.encrypt(password)


def _username(username):
    name = (username or "").strip()
    if len(name) > 320:
        raise InvalidInput("the username is longer than 320 characters")
    if any(ord(c) < 32 for c in name):
        raise InvalidInput("the username must be one line of text")
    return name


def _ensure_not_local(domain):
    if Domain.objects.filter(name=domain).exists():
        raise InvalidInput(f"{domain} is a local domain: its mail is delivered here (remove it first)")
    if DomainAlias.objects.filter(name=domain).exists():
        raise InvalidInput(f"{domain} is a local alias domain: its mail is delivered here (remove it first)")


def _describe(route):
    kind = {"smarthost": "the smart host", "transport": "a transport", "relay": "a relay domain"}[route_kind(route)]
    return f"{kind} via {format_next_hop(route.host, route.port)}"


def format_next_hop(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _save_route(domain, host, port, *, replace, accept_relay, tls, verify_certificate, username, password,
                verify_recipients=SmartHost.Verify.NONE, recipients=""):
    host, port = _next_hop_host(host), _port(port)
    username = _username(username)
    existing = SmartHost.objects.select_for_update().filter(domain=domain).first()
    if existing is not None and not replace:
        if not domain:
            raise Conflict(f"a smart host is already set: {format_next_hop(existing.host, existing.port)}")
        raise Conflict(f"{domain} already has a route: {_describe(existing)}")
    fields = {
        "host": host,
        "port": port,
        "tls": _tls(tls, port, username),
        "verify_certificate": bool(verify_certificate),
        "username": username,
        "password": _stored_password(username, password, existing),
        "accept_relay": accept_relay,
        "verify_recipients": verify_recipients,
        "recipients": recipients,
    }
    if existing is None:
        return SmartHost.objects.create(domain=domain, **fields)
    for name, value in fields.items():
        setattr(existing, name, value)
    existing.save(update_fields=list(fields))
    return existing


@_operator_change("route.set_smarthost")
@transaction.atomic
def set_smarthost(host, port=25, *, tls=None, verify_certificate=True, username="", password=None, replace=True):
    """Send all mail for other domains through `host`:`port` instead of MX lookups.

    tls None picks implicit TLS on port 465, else STARTTLS required with a username,
    else opportunistic STARTTLS. password None keeps the stored one for the same
    username. replace=False refuses to overwrite a smart host already set.
    """
    return _save_route(
        "", host, port, replace=replace, accept_relay=False, tls=tls,
        verify_certificate=verify_certificate, username=username, password=password,
    )


@_operator_change("route.clear_smarthost")
@transaction.atomic
def clear_smarthost():
    """Forget the smart host: mail goes to MX hosts again (or to MAILSUITE_RELAYHOST, if set)."""
    deleted, _ = SmartHost.objects.filter(domain="").delete()
    if not deleted:
        raise NotFound("no smart host is configured")


@_operator_change("route.set_transport")
@transaction.atomic
def set_transport(domain, host, port=25, *, tls=None, verify_certificate=True, username="", password=None,
                  replace=True):
    """Send mail for `domain` to `host`:`port` instead of its MX hosts (or the smart host).

    Arguments as for set_smarthost(); replace=False refuses to overwrite a route the
    domain already has (of any kind).
    """
    domain = _domain_name(domain)
    _ensure_not_local(domain)
    return _save_route(
        domain, host, port, replace=replace, accept_relay=False, tls=tls,
        verify_certificate=verify_certificate, username=username, password=password,
    )


def _relay_recipients(domain, verify, recipients):
    if isinstance(recipients, str):
        recipients = recipients.splitlines()
    entries = [entry.strip() for entry in recipients if entry.strip() and not entry.strip().startswith("#")]
    if verify != SmartHost.Verify.LIST:
        if entries:
            raise InvalidInput("a recipient list is only used with recipient verification 'list'")
        return ""
    if not entries:
        raise InvalidInput(f"verification 'list' needs the addresses of {domain} to accept")
    if len(entries) > MAX_LISTED_RECIPIENTS:
        raise InvalidInput(f"more than {MAX_LISTED_RECIPIENTS} recipients listed")
    listed = set()
    for entry in entries:
        try:
            address = normalize_address(entry)
        except AddressError as error:
            raise InvalidInput(f"recipient list: {error}") from None
        if address.rpartition("@")[2] != domain:
            raise InvalidInput(f"recipient list: {entry} is not in {domain}")
        listed.add(address)
    return "\n".join(sorted(listed))


@_operator_change("route.add_relay_domain")
@transaction.atomic
def add_relay_domain(domain, host, port=25, *, verify_recipients=SmartHost.Verify.NONE, recipients=(), tls=None,
                     verify_certificate=True, username="", password=None, replace=False):
    """Accept mail for `domain` from anyone and pass it on to `host`:`port` (the server
    behind us, or the domain's primary MX when we are its backup).

    verify_recipients: "none" (accept every address), "callout" (ask the next hop at RCPT
    time) or "list" (only `recipients`: addresses, or the text of a file, one a line).
    Other arguments as for set_transport(); replace=True overwrites an existing route.
    """
    domain = _domain_name(domain)
    _ensure_not_local(domain)
    if verify_recipients not in SmartHost.Verify.values:
        raise InvalidInput(
            f"unknown recipient verification {verify_recipients!r} (one of {', '.join(SmartHost.Verify.values)})"
        )
    return _save_route(
        domain, host, port, replace=replace, accept_relay=True, tls=tls,
        verify_certificate=verify_certificate, username=username, password=password,
        verify_recipients=verify_recipients, recipients=_relay_recipients(domain, verify_recipients, recipients),
    )


def get_route(domain):
    """The route for `domain` ("" = the smart host), or NotFound."""
    name = _domain_name(domain) if domain else ""
    route = SmartHost.objects.filter(domain=name).first()
    if route is None:
        raise NotFound(f"no route for {name}" if name else "no smart host is configured")
    return route


@_operator_change("route.remove")
@transaction.atomic
def remove_route(domain):
    """Forget the transport or relay domain for `domain`: its mail goes by MX again, and
    a relay domain's mail is no longer accepted."""
    name = _domain_name(domain)
    deleted, _ = SmartHost.objects.filter(domain=name).delete()
    if not deleted:
        raise NotFound(f"no transport or relay domain for {name}")


def set_inbound_policy(domain, *, greylisting=None, attachments=None):
    """Change a local domain's connection-level anti-spam choices (mta.models.InboundPolicy);
    None leaves a choice as it is. Returns the policy row."""
    from antispam import inbound_policy
    from mta.models import InboundPolicy

    if attachments is not None and attachments not in InboundPolicy.Attachments.values:
        raise InvalidInput(f"attachment policy {attachments!r}: expected reject, quarantine, allow or empty")
    name = _domain_name(domain) if isinstance(domain, str) else domain.name
    with transaction.atomic():
        target = Domain.objects.filter(name=name).first()
        if target is None:
            raise NotFound(f"{name} is not a local domain")
        policy, _ = InboundPolicy.objects.get_or_create(domain=target)
        if greylisting is not None:
            policy.greylisting = greylisting
        if attachments is not None:
            policy.attachments = attachments
        policy.save()
        transaction.on_commit(inbound_policy.forget)  # this process sees the change at once
    log.info("inbound policy of %s: greylisting=%s attachments=%s", name, policy.greylisting, policy.attachments or "default")
    return policy


def remove_inbound_policy(domain):
    """Back to the defaults for `domain`: greylisting off, the server's attachment policy."""
    from antispam import inbound_policy
    from mta.models import InboundPolicy

    name = _domain_name(domain) if isinstance(domain, str) else domain.name
    with transaction.atomic():
        InboundPolicy.objects.filter(domain__name=name).delete()
        transaction.on_commit(inbound_policy.forget)
    log.info("inbound policy of %s removed: defaults apply", name)
