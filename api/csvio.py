"""CSV import and export of accounts and aliases (the API and `manage.py bulk`).

Implementation notes:
- An import runs every row through accounts.actions as the acting user, each row in a
  savepoint, so one bad row is reported and the others still run; the report is one
  entry per row: its line, address, what happened (created, updated, unchanged, error)
  and why. Rows see the effect of the rows before them (limits, duplicates).
- Dry run is the default: the whole import runs in a transaction that is then rolled
  back, so the report says exactly what applying would do. Applying is all or nothing:
  when any row fails nothing is written, and the report says so.
- Exports stream (iterator()), so 100,000 rows do not sit in memory; passwords are never
  exported. An account file has the columns import reads; quota_used is informative.
- Bounded: at most MAX_ROWS rows and MAX_BYTES bytes per import.
"""
import csv
import io
import re
from dataclasses import asdict, dataclass

from django.db import transaction

from accounts import actions
from accounts.errors import AccountsError, InvalidInput, UnknownAddress
from accounts.models import Account, Alias
from mailsuite.lib.sizes import SizeError, parse_size

MAX_ROWS = 100_000
MAX_BYTES = 20 * 1024 * 1024
ACCOUNT_COLUMNS = ("address", "display_name", "quota", "active", "messages_per_hour", "recipients_per_day",
                   "password")
ALIAS_COLUMNS = ("address", "targets")
KINDS = ("accounts", "aliases")


@dataclass
class Row:
    line: int
    address: str
    result: str  # created, updated, unchanged, error
    message: str = ""


@dataclass
class Report:
    kind: str
    applied: bool
    rows: list

    @property
    def counts(self):
        counts = {"created": 0, "updated": 0, "unchanged": 0, "error": 0}
        for row in self.rows:
            counts[row.result] += 1
        return counts

    def as_dict(self):
        return {"kind": self.kind, "applied": self.applied, "counts": self.counts,
                "rows": [asdict(row) for row in self.rows]}


class RolledBack(Exception):
    """Raised to undo a dry run (or a failed apply) after the report is complete."""


# Export --------------------------------------------------------------------------------


def _blank(value):
    return "" if value is None else value


def export_rows(kind, *, acting_user=None, domain=None):
    """The CSV lines (header first) of the accounts or aliases the user may see."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def line(values):
        writer.writerow(values)
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    if kind == "accounts":
        yield line([*ACCOUNT_COLUMNS[:-1], "quota_used"])
        rows = Account.objects.visible_to(acting_user).select_related("domain").order_by("domain__name", "localpart")
        if domain:
            rows = rows.filter(domain__name=domain)
        for account in rows.iterator(chunk_size=2000):
            yield line([account.address, account.display_name, account.quota, "yes" if account.active else "no",
                        _blank(account.messages_per_hour), _blank(account.recipients_per_day), account.quota_used])
    elif kind == "aliases":
        yield line(list(ALIAS_COLUMNS))
        rows = Alias.objects.visible_to(acting_user).select_related("domain").order_by("domain__name", "localpart")
        if domain:
            rows = rows.filter(domain__name=domain)
        for alias in rows.prefetch_related("targets").iterator(chunk_size=2000):
            yield line([alias.address, " ".join(target.address for target in alias.targets.all())])
    else:
        raise InvalidInput(f"unknown kind {kind!r}: accounts or aliases")


# Import --------------------------------------------------------------------------------


def _records(text, columns):
    """(line number, {column: value}) for each data row; InvalidInput for a bad file."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise InvalidInput(f"the file is larger than {MAX_BYTES // (1024 * 1024)} MiB")
    if "\x00" in text:
        raise InvalidInput("the file contains NUL bytes: it is not CSV text")
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    try:
        header = [name.strip().lower() for name in next(reader, [])]
    except csv.Error as error:
        raise InvalidInput(f"line 1: {error}") from None
    if "address" not in header:
        raise InvalidInput(f"the first line must name the columns, among them address (known: {', '.join(columns)})")
    unknown = [name for name in header if name and name not in columns and name != "quota_used"]
    if unknown:
        raise InvalidInput(f"unknown column(s): {', '.join(unknown)} (known: {', '.join(columns)})")
    count = 0
    try:
        for values in reader:
            if not any(value.strip() for value in values):
                continue
            count += 1
            if count > MAX_ROWS:
                raise InvalidInput(f"more than {MAX_ROWS} rows: split the file")
            yield reader.line_num, {name: value.strip() for name, value in zip(header, values) if name}
    except csv.Error as error:
        raise InvalidInput(f"line {reader.line_num}: {error}") from None


def _flag(text, what):
    value = text.strip().lower()
    if value in ("", "yes", "true", "1", "active"):
        return True
    if value in ("no", "false", "0", "disabled"):
        return False
    raise InvalidInput(f"{what} must be yes or no, not {text!r}")


def _number(text, what):
    if text == "":
        return None
    if not text.isdigit():
        raise InvalidInput(f"{what} must be a whole number, not {text!r}")
    return int(text)


def _quota(text):
    if text == "":
        return None
    try:
        return parse_size(text)
    except SizeError as error:
        raise InvalidInput(f"quota: {error}") from None


def _import_account(record, user):
    address = record["address"]
    quota = _quota(record.get("quota", ""))
    active = _flag(record.get("active", ""), "active")
    limits = {name: _number(record.get(name, ""), name.replace("_", " ")) for name in
              ("messages_per_hour", "recipients_per_day")}
    password = record.get("password") or None
    try:
        account = actions.get_account(address, acting_user=user)
    except UnknownAddress:
        account = actions.create_account(address, password=password, quota=quota, active=active,
                                         display_name=record.get("display_name", ""), acting_user=user)
        if any(value is not None for value in limits.values()):
            actions.set_send_limits(account.address, **limits, acting_user=user)
        return account.address, "created", ""
    changed = []
    if "display_name" in record and record["display_name"] != account.display_name:
        actions.set_display_name(account.address, record["display_name"], acting_user=user)
        changed.append("display name")
    if quota is not None and quota != account.quota:
        actions.set_quota(account.address, quota, acting_user=user)
        changed.append("quota")
    if "active" in record and active != account.active:
        actions.set_account_active(account.address, active, acting_user=user)
        changed.append("active")
    if any(name in record for name in limits) and any(
            limits[name] != getattr(account, name) for name in limits if name in record):
        merged = {name: limits[name] if name in record else getattr(account, name) for name in limits}
        actions.set_send_limits(account.address, **merged, acting_user=user)
        changed.append("sending limits")
    if password is not None:
        actions.set_password(account.address, password, acting_user=user)
        changed.append("password")
    return account.address, "updated" if changed else "unchanged", ", ".join(changed)


def _targets(text):
    return [target for target in re.split(r"[,;\s]+", text) if target]


def _import_alias(record, user):
    address, targets = record["address"], _targets(record.get("targets", ""))
    try:
        alias = actions.get_alias(address, acting_user=user)
    except UnknownAddress:
        alias = actions.create_alias(address, targets, acting_user=user)
        return alias.address, "created", ""
    current = [target.address for target in alias.targets.all()]
    alias = actions.set_alias_targets(address, targets, acting_user=user)
    new = [target.address for target in alias.targets.all()]
    return alias.address, "unchanged" if new == current else "updated", "" if new == current else "targets"


def import_csv(kind, text, *, apply=False, acting_user=None):
    """Run the rows of `text`; the Report. Nothing is written unless apply and every row succeeded."""
    if kind not in KINDS:
        raise InvalidInput(f"unknown kind {kind!r}: accounts or aliases")
    columns, run_row = (ACCOUNT_COLUMNS, _import_account) if kind == "accounts" else (ALIAS_COLUMNS, _import_alias)
    report = Report(kind=kind, applied=False, rows=[])
    try:
        with transaction.atomic():
            for line, record in _records(text, columns):
                shown = record.get("address", "")
                try:
                    with transaction.atomic():
                        if not shown:
                            raise InvalidInput("the address is empty")
                        address, result, message = run_row(record, acting_user)
                    report.rows.append(Row(line, address, result, message))
                except AccountsError as error:
                    report.rows.append(Row(line, shown, "error", str(error)))
            if not apply or report.counts["error"]:
                raise RolledBack
            report.applied = True
    except RolledBack:
        pass
    return report
