"""Which command runs in which state (RFC 9051 §6: the command table).

Each handler is `async def handler(session, command)` returning None (the tagged OK says
"<COMMAND> completed") or a (code, text) pair for the tagged OK; refusals raise
session.No / session.Bad. Handlers live in modules by the state they need
(RFC 9051 §6.1–§6.4).
"""
from dataclasses import dataclass

from imap import parser as p
from imap.commands import any_state, mailboxes, not_authenticated, selected
from imap.session import State

ANY = frozenset(State) - {State.LOGOUT}
NOT_AUTHENTICATED = frozenset({State.NOT_AUTHENTICATED})
AUTHENTICATED = frozenset({State.AUTHENTICATED, State.SELECTED})
SELECTED = frozenset({State.SELECTED})


@dataclass(frozen=True)
class Entry:
    handler: object
    states: frozenset


def _table():
    return {
        p.Capability: Entry(any_state.capability, ANY),
        p.Noop: Entry(any_state.noop, ANY),
        p.Logout: Entry(any_state.logout, ANY),
        p.Id: Entry(any_state.id_, ANY),
        p.StartTLS: Entry(not_authenticated.starttls, NOT_AUTHENTICATED),
        p.Login: Entry(not_authenticated.login, NOT_AUTHENTICATED),
        p.Authenticate: Entry(not_authenticated.authenticate, NOT_AUTHENTICATED),
        p.Enable: Entry(any_state.enable, frozenset({State.AUTHENTICATED})),  # RFC 5161 §3.1
        p.Compress: Entry(any_state.compress, AUTHENTICATED),  # RFC 4978 §3
        p.Namespace: Entry(any_state.namespace, AUTHENTICATED),
        p.Idle: Entry(any_state.idle, AUTHENTICATED),
        p.Select: Entry(mailboxes.select, AUTHENTICATED),
        p.Create: Entry(mailboxes.create, AUTHENTICATED),
        p.Delete: Entry(mailboxes.delete, AUTHENTICATED),
        p.Rename: Entry(mailboxes.rename, AUTHENTICATED),
        p.Subscribe: Entry(mailboxes.subscribe, AUTHENTICATED),
        p.Unsubscribe: Entry(mailboxes.unsubscribe, AUTHENTICATED),
        p.List: Entry(mailboxes.list_, AUTHENTICATED),
        p.Lsub: Entry(mailboxes.lsub, AUTHENTICATED),
        p.Status: Entry(mailboxes.status, AUTHENTICATED),
        p.Append: Entry(mailboxes.append, AUTHENTICATED),
        p.GetQuota: Entry(mailboxes.getquota, AUTHENTICATED),
        p.GetQuotaRoot: Entry(mailboxes.getquotaroot, AUTHENTICATED),
        p.SetQuota: Entry(mailboxes.setquota, AUTHENTICATED),
        p.Check: Entry(selected.check, SELECTED),
        p.Close: Entry(selected.close, SELECTED),
        p.Unselect: Entry(selected.unselect, SELECTED),
        p.Expunge: Entry(selected.expunge, SELECTED),
        p.Search: Entry(selected.search, SELECTED),
        p.Fetch: Entry(selected.fetch, SELECTED),
        p.Store: Entry(selected.store, SELECTED),
        p.Copy: Entry(selected.copy, SELECTED),
        p.Move: Entry(selected.move, SELECTED),
        p.Sort: Entry(selected.sort, SELECTED),
        p.Thread: Entry(selected.thread, SELECTED),
    }


TABLE = _table()
