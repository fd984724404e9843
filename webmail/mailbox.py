"""What the webmail reads from the mail store: folders, message pages, search.

Implementation notes:
- Everything starts from the signed-in account (folders_of, folder_of): a folder or
  message of another account is simply not found.
- A page of the list costs a fixed number of queries whatever the folder's size: the
  folder tree reads the counters the mail store maintains (never COUNT(*) per folder), an
  unfiltered page takes its total from the folder's counters, and the rows come in one
  query with only the columns the list shows.
- Conversations group by Message.thread_key (set at delivery from the References,
  In-Reply-To and Message-ID fields: mailstore.actions.thread_key). A folder's are
  listed from its Conversation rows (one per thread, kept by mailstore.actions with every
  change to the folder's messages), a page of 50 read through their (folder,
  latest_date) index; then two queries for the page's conversations only (their newest
  message here, and their size and unread count across the account's folders, so
  replies in Sent count). Search results are grouped by the threads of the matches.
- Text search uses the mail store's substring index (migration 0004 of mailstore: FTS5
  trigram tables on SQLite, pg_trgm on PostgreSQL), as IMAP SEARCH does (imap/search.py);
  see webmail.search.
"""
from dataclasses import dataclass, field

from django.db.models import Count, F, Max, Q, Window
from django.db.models.functions import Lower, RowNumber
from django.utils.translation import gettext_lazy as _

from mailsuite.db.planner import text_index_preferred
from mailstore.models import DEFAULT_FOLDERS, HIERARCHY_DELIMITER, Conversation, Folder, Message
from webmail.search import Criteria

PAGE_SIZE = 50
TRASH, JUNK, SENT, DRAFTS, ARCHIVE = "\\Trash", "\\Junk", "\\Sent", "\\Drafts", "\\Archive"
# Folder order in the tree: INBOX, then the special-use folders as new accounts get them.
_SPECIAL_ORDER = {use: i for i, (_, use) in enumerate(DEFAULT_FOLDERS) if use}
# Names shown for the top-level special folders (the stored names stay as IMAP sees them).
LABELS = {TRASH: _("Trash"), JUNK: _("Junk"), SENT: _("Sent"), DRAFTS: _("Drafts"), ARCHIVE: _("Archive")}
ICONS = {"": "folder", TRASH: "trash", JUNK: "junk", SENT: "sent", DRAFTS: "drafts", ARCHIVE: "archive", "\\All": "all", "\\Flagged": "flagged"}


def folders_of(account):
    """The account's folders (the columns the tree and the menus need)."""
    return list(
        Folder.objects.filter(account=account)
        .only("id", "name", "special_use", "subscribed", "message_count", "unseen_count", "account_id")
        .order_by("name")
    )


@dataclass
class TreeNode:
    folder: Folder
    depth: int
    label: str
    icon: str
    has_children: bool = False

    @property
    def parent_name(self):
        return self.folder.name.rpartition(HIERARCHY_DELIMITER)[0]

    @property
    def indented_label(self):
        """The label indented by depth, for <option>s (which take no markup)."""
        return "\u00a0\u00a0" * self.depth + str(self.label)


def folder_tree(account, folders=None):
    """TreeNodes in display order; a child's label is its last level."""
    folders = folders if folders is not None else folders_of(account)
    by_top = {}
    for folder in folders:
        if HIERARCHY_DELIMITER not in folder.name:
            by_top[folder.name] = folder
    ranked = sorted(by_top.values(), key=lambda f: (0 if f.name == "INBOX" else 1 + _SPECIAL_ORDER.get(f.special_use, 99), f.name.casefold()))
    rank = {f.name: i for i, f in enumerate(ranked)}
    ordered = sorted(
        folders,
        key=lambda f: (rank.get(f.name.split(HIERARCHY_DELIMITER)[0], len(rank)), [p.casefold() for p in f.name.split(HIERARCHY_DELIMITER)]),
    )
    names = {f.name for f in folders}
    nodes = []
    for folder in ordered:
        levels = folder.name.split(HIERARCHY_DELIMITER)
        nodes.append(
            TreeNode(
                folder=folder,
                depth=len(levels) - 1,
                label=_("Inbox") if folder.name == "INBOX" else (LABELS.get(folder.special_use) if len(levels) == 1 else None) or levels[-1],
                icon=ICONS.get(folder.special_use, "folder") if folder.name != "INBOX" else "inbox",
                has_children=any(n.startswith(folder.name + HIERARCHY_DELIMITER) for n in names),
            )
        )
    return nodes


def folder_of(account, folder_id):
    """The account's folder with this id; raises Folder.DoesNotExist."""
    return Folder.objects.get(pk=folder_id, account=account)


def special_folder(account, use, folders=None):
    """The account's folder with this special use (\\Trash, \\Junk...), or None."""
    if folders is not None:
        return next((f for f in folders if f.special_use == use), None)
    return Folder.objects.filter(account=account, special_use=use).order_by("pk").first()


# The list ----------------------------------------------------------------------------

# sort name -> (column, descending by default); text columns sort ignoring case.
SORTS = {
    "date": ("sent_date", True),
    "arrival": ("uid", True),
    "from": ("from_display", False),
    "subject": ("subject", False),
    "size": ("size", True),
}
_TEXT_SORTS = {"from_display", "subject"}


def _sort_key(column):
    return Lower(column) if column in _TEXT_SORTS else F(column)
FILTERS = ("unread", "flagged", "attachments")
LIST_COLUMNS = (
    "id", "folder_id", "uid", "sent_date", "internaldate", "size", "subject", "from_display",
    "from_address", "to_display", "seen", "flagged", "answered", "draft", "has_attachments", "blob__preview",
)


@dataclass
class ListQuery:
    """What the user asked the list for: parsed from the query string, never trusted."""

    sort: str = "date"
    reverse: bool | None = None  # None: the sort's natural direction
    filter: str = ""
    page: int = 1
    search: Criteria = field(default_factory=Criteria)

    @classmethod
    def from_params(cls, params):
        sort = params.get("sort", "date")
        if sort not in SORTS:
            sort = "date"
        order = params.get("order")
        reverse = {"asc": False, "desc": True}.get(order)
        filter_ = params.get("filter", "")
        if filter_ not in FILTERS:
            filter_ = ""
        try:
            page = max(1, min(int(params.get("page", 1)), 1_000_000))
        except ValueError:
            page = 1
        return cls(sort=sort, reverse=reverse, filter=filter_, page=page, search=Criteria.from_params(params))

    @property
    def descending(self):
        return SORTS[self.sort][1] if self.reverse is None else self.reverse

    def params(self, **changes):
        """Query-string parameters for this query with some changed (links keep the rest)."""
        values = {"sort": self.sort, "filter": self.filter, "page": self.page}
        if self.reverse is not None:
            values["order"] = "desc" if self.reverse else "asc"
        values.update(self.search.params())
        values.update(changes)
        return {k: v for k, v in values.items() if v not in ("", None) and not (k == "page" and v == 1) and not (k == "sort" and v == "date")}


@dataclass
class Page:
    messages: list
    total: int
    number: int
    size: int = PAGE_SIZE

    @property
    def pages(self):
        return max(1, -(-self.total // self.size))

    @property
    def has_next(self):
        return self.number < self.pages

    @property
    def has_previous(self):
        return self.number > 1

    @property
    def first_index(self):
        return (self.number - 1) * self.size + 1 if self.total else 0

    @property
    def last_index(self):
        return min(self.total, self.number * self.size)


def _ordering(query):
    column, _ = SORTS[query.sort]
    desc = query.descending
    key = _sort_key(column)
    keys = [key.desc() if desc else key.asc()]
    if column != "uid":
        # A stable order for equal keys: arrival. Within a folder the row id grows with the
        # UID (both are given as a row is added, under the folder's lock), so either says
        # it. By date, the id: it ends every SQLite index, so (folder, sent_date) serves a
        # page without a sort. Otherwise the UID: no index serves a text or size sort, and
        # with the UID the planner reads the rows in (folder, uid) order, not at random.
        tie = "id" if column == "sent_date" else "uid"
        keys.append(F(tie).desc() if desc else F(tie).asc())
    return keys


def _filtered(messages, query):
    """(messages narrowed by the list's filter, whether it narrowed them)."""
    if query.filter == "unread":
        return messages.filter(seen=False), True
    if query.filter == "flagged":
        return messages.filter(flagged=True), True
    if query.filter == "attachments":
        return messages.filter(has_attachments=True), True
    return messages, False


def message_page(account, query, folder=None):
    """One page of the list: the folder's messages, or with search criteria and no folder,
    the account's messages in every folder."""
    with text_index_preferred(bool(query.search)):
        return _message_page(account, query, folder)


def _message_page(account, query, folder):
    messages = Message.objects.filter(folder=folder) if folder is not None else Message.objects.filter(folder__account=account)
    messages, filtered = _filtered(messages, query)
    if query.search:
        messages, filtered = messages.filter(query.search.q()), True
    if folder is not None and not filtered:
        total = folder.message_count
    elif folder is not None and query.filter == "unread" and not query.search:
        total = folder.unseen_count
    else:
        total = messages.count()
    pages = max(1, -(-total // PAGE_SIZE))
    number = min(query.page, pages)
    start = (number - 1) * PAGE_SIZE
    columns = LIST_COLUMNS if folder is not None else LIST_COLUMNS + ("folder__name",)
    # The page's ids first, then their columns: skipping to a later page walks the
    # (folder, sent_date) index and the message rows only, not the joined blob rows of
    # every message before it.
    ids = messages.order_by(*_ordering(query)).values("id")[start : start + PAGE_SIZE]
    rows = list(Message.objects.filter(id__in=ids).order_by(*_ordering(query)).values(*columns))
    return Page(messages=rows, total=total, number=number)


# Conversations -------------------------------------------------------------------------

MAX_CONVERSATION = 100  # messages one conversation page shows (the newest)


def groups_conversations(query, folder):
    """Whether the list for `query` can be grouped: a folder's list by date, and search
    results by date (in a folder or in all of them), as Gmail and Fastmail group them.
    Other sort orders are lists of messages."""
    return query.sort == "date" and (folder is not None or bool(query.search))


def conversation_folders(account, folder, folders=None):
    """Ids of the folders whose messages make up a conversation seen from `folder`: all
    but Trash and Junk (what was thrown away or is spam is no part of it), plus `folder`."""
    folders = folders if folders is not None else folders_of(account)
    return [f.pk for f in folders if f.special_use not in (TRASH, JUNK) or (folder is not None and f.pk == folder.pk)]


# Conversation rows a list filter keeps: those with at least one such message.
_CONVERSATION_FILTERS = {"unread": "unread__gt", "flagged": "flagged__gt", "attachments": "attachments__gt"}


def conversation_page(account, query, folder):
    """One page of conversations, newest first: a folder's (read from the Conversation
    rows the mail store keeps, ordered by their newest message in the folder; a filter
    keeps those with a message that passes it), or, with search criteria, those of the
    messages that match (in the folder, or with no folder in every folder; ordered by
    their newest match). Each row is the newest such message's LIST_COLUMNS (and
    folder__name without a folder) plus thread_key, thread_count and thread_unread
    (over conversation_folders)."""
    with text_index_preferred(bool(query.search)):
        if query.search:
            return _matching_conversations(account, query, folder)
        return _folder_conversations(account, query, folder)


def _page_bounds(total, query):
    pages = max(1, -(-total // PAGE_SIZE))
    number = min(query.page, pages)
    return number, (number - 1) * PAGE_SIZE


def _folder_conversations(account, query, folder):
    conversations = Conversation.objects.filter(folder=folder)
    if query.filter:
        conversations = conversations.filter(**{_CONVERSATION_FILTERS[query.filter]: 0})
    total = conversations.count()
    number, start = _page_bounds(total, query)
    if query.descending:
        order = [F("latest_date").desc(nulls_last=True), F("latest_id").desc()]
    else:
        order = [F("latest_date").asc(nulls_first=True), F("latest_id").asc()]
    keys = list(conversations.order_by(*order).values_list("thread_key", flat=True)[start : start + PAGE_SIZE])
    messages, _narrowed = _filtered(Message.objects.filter(folder=folder), query)
    return Page(messages=_conversation_rows(account, folder, messages, keys), total=total, number=number)


def _matching_conversations(account, query, folder):
    messages = Message.objects.filter(folder=folder) if folder is not None else Message.objects.filter(folder__account=account)
    messages, _narrowed = _filtered(messages, query)
    messages = messages.filter(query.search.q())
    groups = messages.values("thread_key").annotate(latest=Max("sent_date"), last_id=Max("id"))
    total = groups.count()
    number, start = _page_bounds(total, query)
    if query.descending:
        groups = groups.order_by(F("latest").desc(nulls_last=True), F("last_id").desc())
    else:
        groups = groups.order_by(F("latest").asc(nulls_first=True), F("last_id").asc())
    keys = list(groups.values_list("thread_key", flat=True)[start : start + PAGE_SIZE])
    return Page(messages=_conversation_rows(account, folder, messages, keys), total=total, number=number)


def _conversation_rows(account, folder, messages, keys):
    """The list rows of the conversations `keys` (in that order): each one's newest
    message among `messages`, with its size and unread count across the account's
    conversation folders (so replies in Sent count). Two queries."""
    if not keys:
        return []
    columns = LIST_COLUMNS if folder is not None else LIST_COLUMNS + ("folder__name",)
    newest = (
        messages.filter(thread_key__in=keys)
        .annotate(rank=Window(RowNumber(), partition_by=[F("thread_key")], order_by=[F("sent_date").desc(nulls_last=True), F("id").desc()]))
        .filter(rank=1)
        .values(*columns, "thread_key")
    )
    by_key = {row["thread_key"]: row for row in newest}
    sizes = (
        Message.objects.filter(folder_id__in=conversation_folders(account, folder), thread_key__in=keys)
        .values("thread_key").annotate(count=Count("blob_id", distinct=True), unread=Count("id", filter=Q(seen=False)))
        .order_by()
    )
    for row in sizes:
        if row["thread_key"] in by_key:
            by_key[row["thread_key"]].update(thread_count=row["count"], thread_unread=row["unread"])
    rows = [by_key[key] for key in keys if key in by_key]
    for row in rows:
        row.setdefault("thread_count", 1)
        row.setdefault("thread_unread", 0 if row["seen"] else 1)
    return rows


def thread_uids(folder, uids):
    """The UIDs of the folder's messages in the conversations of these (for actions on
    whole conversations)."""
    keys = Message.objects.filter(folder=folder, uid__in=list(uids)[:PAGE_SIZE * 10]).values("thread_key")
    return list(Message.objects.filter(folder=folder, thread_key__in=keys).values_list("uid", flat=True)[:10_000])


def conversation_of(account, folder, message):
    """The messages of `message`'s conversation in date order (the newest
    MAX_CONVERSATION; copies of one message in two folders shown once, the one in
    `folder` preferred), with their folders, and how many older ones were left out."""
    found = list(
        Message.objects.filter(folder_id__in=conversation_folders(account, folder), thread_key=message.thread_key)
        .select_related("blob", "folder").order_by(F("sent_date").desc(nulls_last=True), "-id")[: MAX_CONVERSATION * 2]
    )
    if not any(m.pk == message.pk for m in found):
        found.insert(0, message)
    chosen = {}
    for m in found:
        if m.blob_id not in chosen or (m.folder_id == folder.pk and chosen[m.blob_id].folder_id != folder.pk):
            chosen[m.blob_id] = m
    ordered = [m for m in found if chosen.get(m.blob_id) is m][:MAX_CONVERSATION]
    total = Message.objects.filter(
        folder_id__in=conversation_folders(account, folder), thread_key=message.thread_key
    ).values("blob_id").distinct().count()
    ordered.reverse()
    return ordered, max(0, total - len(ordered))


def message_of(folder, uid):
    """The folder's message with this UID, with its blob; raises Message.DoesNotExist."""
    return Message.objects.select_related("blob").get(folder=folder, uid=uid)


def neighbours(folder, message, query):
    """(previous uid, next uid) of `message` in the folder's list order for `query`
    (its sort and filter; None at the ends). Two indexed queries."""
    column, _ = SORTS[query.sort]
    value = getattr(message, column)
    base = Message.objects.filter(folder=folder)
    if value is None:  # no Date: field; its neighbours among the others without one, by arrival
        base, column, value = base.filter(**{f"{column}__isnull": True}), "uid", message.uid
    if query.filter == "unread":
        base = base.filter(seen=False)
    elif query.filter == "flagged":
        base = base.filter(flagged=True)
    elif query.filter == "attachments":
        base = base.filter(has_attachments=True)
    if column in _TEXT_SORTS:
        base, column, value = base.annotate(sort_key=Lower(column)), "sort_key", value.lower()
    desc = query.descending
    backwards = ListQuery(sort=query.sort, reverse=not desc)

    def step(direction, order):
        """The first message past this one going `direction` ("lt"/"gt") in `order`. An
        (a < x) OR (a = x AND uid < y) condition makes SQLite scan the folder, so it is
        asked as two index range scans: equal key and arrival past this one (the row id, as
        _ordering), then past the key."""
        if column == "uid":
            return base.filter(**{f"uid__{direction}": value}).order_by(*_ordering(order)).values_list("uid", flat=True).first()
        same = base.filter(**{column: value, f"id__{direction}": message.pk})
        found = same.order_by(*_ordering(order)).values_list("uid", flat=True).first()
        if found is None:
            past = base.filter(**{f"{column}__{direction}": value})
            found = past.order_by(*_ordering(order)).values_list("uid", flat=True).first()
        return found

    next_uid = step("lt" if desc else "gt", query)
    previous_uid = step("gt" if desc else "lt", backwards)
    return previous_uid, next_uid
