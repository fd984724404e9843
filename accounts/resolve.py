"""Which mailboxes and external addresses one recipient address stands for.

Order for local@domain (RFC 5233 subaddresses use MAILSUITE_SUBADDRESS_SEPARATOR):
  1. a domain alias rewrites the domain to its target domain;
  2. an account, alias or redirect with exactly that address;
  3. the same with the subaddress detail removed (bob+lists → bob);
  4. the domain's catch-all alias (empty local part).
Alias targets are expanded recursively; an address outside our domains is external
(it leaves through the outbound queue). A loop is an error when an alias is saved
(strict) and a dropped branch at delivery time, so a message is never lost to one.
"""
from dataclasses import dataclass, field

from django.conf import settings

from accounts.errors import (
    AliasLoop,
    DisabledRecipient,
    ExpansionTooLarge,
    NotLocal,
    UnknownRecipient,
)
from accounts.models import Account, Alias, Domain, DomainAlias, Redirect
from mailsuite.lib.addresses import split_address

MAX_EXPANSION = 1000


@dataclass
class Resolution:
    address: str
    accounts: dict = field(default_factory=dict)  # account id -> Account
    external: list = field(default_factory=list)  # addresses outside our domains
    dropped: list = field(default_factory=list)  # (address, reason) for branches that lead nowhere
    via_catchall: bool = False  # the address itself matched only the domain's catch-all
    relayed: bool = False  # an address in another domain, passed on as it is (not forwarded for a local one)

    def __bool__(self):
        return bool(self.accounts or self.external)


def _one(model, where, params):
    """The first row matching a plain WHERE clause, or None.

    Every RCPT TO runs these lookups; a raw query costs a quarter of what building
    the same query with the ORM does.
    """
    sql = f"SELECT * FROM {model._meta.db_table} WHERE {where} LIMIT 1"
    return next(iter(model.objects.raw(sql, params)), None)


def local_domain(domain_name):
    """The Domain serving `domain_name` (following a domain alias), or None.

    One query for the three cases (a domain, an active alias of one, neither): a
    domain of that name wins over an alias of that name. A plain cursor and
    Model.from_db(): raw()'s column mapping cost more than the query."""
    from django.db import connection

    sql, names, converters = _domain_query(connection)
    with connection.cursor() as cursor:
        cursor.execute(sql, [domain_name, domain_name])
        row = cursor.fetchone()
    if row is None:
        return None
    values = list(row[:len(names)])
    for i, column, convert in converters:
        values[i] = convert(values[i], column, connection)
    return Domain.from_db(connection.alias, names, values)


_domain_queries = {}  # database alias → (SQL, field names, [(index, column, converter)])


def _domain_query(connection):
    found = _domain_queries.get(connection.alias)
    if found is None:
        fields = Domain._meta.concrete_fields
        columns = ", ".join(f"d.{f.column}" for f in fields)
        domain_table, alias_table = Domain._meta.db_table, DomainAlias._meta.db_table
        sql = (
            f"SELECT * FROM (SELECT {columns}, 0 AS via_alias FROM {domain_table} d WHERE d.name = %s"
            f" UNION ALL SELECT {columns}, 1 AS via_alias FROM {domain_table} d"
            f" JOIN {alias_table} a ON a.target_id = d.id WHERE a.name = %s AND a.active) found"
            f" ORDER BY via_alias LIMIT 1"
        )
        converters = []
        for i, f in enumerate(fields):
            column = f.get_col(domain_table)  # what the ORM's compiler converts with, in its order
            for convert in connection.ops.get_db_converters(column) + column.get_db_converters(connection):
                converters.append((i, column, convert))
        found = _domain_queries[connection.alias] = (sql, [f.attname for f in fields], converters)
    return found


def is_local_domain(domain_name):
    """Whether local_domain(domain_name) is not None, without building the Domain."""
    from django.db import connection

    domain_table, alias_table = Domain._meta.db_table, DomainAlias._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT 1 FROM {domain_table} WHERE name = %s"
            f" UNION ALL SELECT 1 FROM {alias_table} WHERE name = %s AND active LIMIT 1",
            [domain_name, domain_name],
        )
        return cursor.fetchone() is not None


def _lookup(localpart, domain):
    for model in (Account, Alias, Redirect):
        match = _one(model, "domain_id = %s AND localpart = %s", [domain.pk, localpart])
        if match is not None:
            match.domain = domain
            return match
    return None


def _find(localpart, domain):
    """(the account, alias or redirect that takes mail for localpart@domain, via catch-all?)"""
    match = _lookup(localpart, domain)
    separator = settings.MAILSUITE_SUBADDRESS_SEPARATOR
    if match is None and separator in localpart.strip(separator):
        match = _lookup(localpart.split(separator, 1)[0], domain)
    if match is not None:
        return match, False
    match = _one(Alias, "domain_id = %s AND localpart = ''", [domain.pk])
    if match is not None:
        match.domain = domain
    return match, match is not None


def resolve(address, *, strict=False):
    """Expand `address`; raise NotLocal/UnknownRecipient/DisabledRecipient if it leads nowhere.

    strict=True raises AliasLoop on a loop instead of dropping the branch.
    """
    localpart, domain_name = split_address(address)
    domain = local_domain(domain_name)
    if domain is None:
        raise NotLocal(f"{domain_name} is not a local domain")
    result = Resolution(address=f"{localpart}@{domain_name}")
    expand(localpart, domain, result, path=(), strict=strict)
    if not result:
        reason = result.dropped[0][1] if result.dropped else "unknown"
        if reason == "disabled":
            raise DisabledRecipient(f"{address}: mailbox disabled")
        raise UnknownRecipient(f"{address}: no such user here")
    return result


def expand(localpart, domain, result, *, path, strict):
    key = f"{localpart}@{domain.name}"
    if key in path:
        if strict:
            raise AliasLoop(" → ".join(path + (key,)))
        result.dropped.append((key, "loop"))
        return
    if len(path) + len(result.accounts) + len(result.external) > MAX_EXPANSION:
        raise ExpansionTooLarge(f"{path[0] if path else key} expands to more than {MAX_EXPANSION} addresses")
    if not domain.active:
        result.dropped.append((key, "disabled"))
        return
    match, via_catchall = _find(localpart, domain)
    if not path:
        result.via_catchall = via_catchall
    if match is None:
        result.dropped.append((key, "unknown"))
        return
    if not match.active:
        result.dropped.append((key, "disabled"))
        return
    if isinstance(match, Account):
        result.accounts.setdefault(match.pk, match)
    elif isinstance(match, Redirect):
        if match.target not in result.external:
            result.external.append(match.target)
    else:
        for target in match.targets.all():
            target_local, target_domain_name = split_address(target.address)
            target_domain = local_domain(target_domain_name)
            if target_domain is None:
                if target.address not in result.external:
                    result.external.append(target.address)
            else:
                expand(target_local, target_domain, result, path=path + (key,), strict=strict)
