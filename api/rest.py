"""The API's framework pieces: errors, paging, filters (authentication is in api.auth).

Implementation notes:
- Errors are JSON: {"detail": one line, "code": a word, "fields": {field: [messages]}}
  ("fields" only for invalid input). accounts.errors and sieve.actions errors map here in
  one place: NotFound 404, Forbidden 403, Conflict/LimitExceeded 409, others 400.
- Another tenant's object is a 404 like a missing one: the querysets are narrowed by
  visible_to(request.user) before any lookup, and the actions check again.
- Lists page with cursors (stable under inserts); the order is one of the view's
  `ordering_fields`, with the primary key breaking ties.
"""
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, filters, pagination, status
from rest_framework.parsers import BaseParser
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from accounts.errors import AccountsError, Conflict, Forbidden, LimitExceeded, NotFound
from sieve import actions as sieve_actions


ERROR_STATUS = [
    (NotFound, status.HTTP_404_NOT_FOUND, "not_found"),
    (Forbidden, status.HTTP_403_FORBIDDEN, "forbidden"),
    (LimitExceeded, status.HTTP_409_CONFLICT, "limit_exceeded"),
    (Conflict, status.HTTP_409_CONFLICT, "conflict"),
    (sieve_actions.NoSuchScript, status.HTTP_404_NOT_FOUND, "not_found"),
    (sieve_actions.ScriptExists, status.HTTP_409_CONFLICT, "conflict"),
    (sieve_actions.ScriptActive, status.HTTP_409_CONFLICT, "conflict"),
    (sieve_actions.QuotaExceeded, status.HTTP_409_CONFLICT, "limit_exceeded"),
]


def _flatten(detail):
    if isinstance(detail, dict):
        return {key: _messages(value) for key, value in detail.items()}
    return {"non_field_errors": _messages(detail)}


def _messages(value):
    if isinstance(value, dict):
        return [f"{key}: {message}" for key, inner in value.items() for message in _messages(inner)]
    if isinstance(value, list):
        return [message for item in value for message in _messages(item)]
    return [str(value)]


def exception_handler(error, context):
    """Every refusal as {"detail", "code", "fields"?} JSON."""
    if isinstance(error, (AccountsError, sieve_actions.SieveError)):
        for kind, code, word in ERROR_STATUS:
            if isinstance(error, kind):
                return Response({"detail": str(error), "code": word}, status=code)
        return Response({"detail": str(error), "code": "invalid"}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(error, DjangoValidationError):
        error = exceptions.ValidationError(error.messages)
    if isinstance(error, Http404):
        error = exceptions.NotFound()
    response = drf_exception_handler(error, context)
    if response is None:
        return None
    if isinstance(error, exceptions.ValidationError):
        fields = _flatten(error.detail)
        first = next(iter(fields.items()))
        detail = first[1][0] if first[0] == "non_field_errors" else f"{first[0]}: {first[1][0]}"
        response.data = {"detail": detail, "code": "invalid", "fields": fields}
    else:
        detail = error.detail if isinstance(error, exceptions.APIException) else str(error)
        response.data = {"detail": str(detail), "code": getattr(detail, "code", None) or "error"}
    return response


class CursorPagination(pagination.CursorPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
    ordering = "id"


class OrderingFilter(filters.OrderingFilter):
    """One ordering field at a time (a cursor pages on it), with the primary key as tie-break."""

    def get_ordering(self, request, queryset, view):
        ordering = super().get_ordering(request, queryset, view)
        if not ordering:
            return ordering
        first = ordering[0]
        if first.lstrip("-") in ("id", "pk"):
            return [first]
        return [first, "-id" if first.startswith("-") else "id"]


class FieldFilter(filters.BaseFilterBackend):
    """Exact filters a view declares: `filter_fields = {"param": ("lookup", type, "description")}`.

    Types: str, int, bool ("true"/"false"). A malformed value is a 400 naming the parameter.
    """

    def filter_queryset(self, request, queryset, view):
        for param, (lookup, kind, _) in getattr(view, "filter_fields", {}).items():
            raw = request.query_params.get(param)
            if raw is None or raw == "":
                continue
            queryset = queryset.filter(**{lookup: self._value(param, raw, kind)})
        return queryset

    @staticmethod
    def _value(param, raw, kind):
        if kind is bool:
            if raw.lower() not in ("true", "false", "1", "0"):
                raise exceptions.ValidationError({param: ["Must be true or false."]})
            return raw.lower() in ("true", "1")
        if kind is int:
            try:
                value = int(raw)
            except ValueError:
                raise exceptions.ValidationError({param: ["Must be a whole number."]}) from None
            if not -(2**63) <= value < 2**63:
                raise exceptions.ValidationError({param: ["Out of range."]})
            return value
        if "\x00" in raw:
            raise exceptions.ValidationError({param: ["Must not contain NUL."]})
        return raw.strip().lower()

    def get_schema_operation_parameters(self, view):
        types = {str: "string", int: "integer", bool: "boolean"}
        return [
            {
                "name": param, "required": False, "in": "query", "description": description,
                "schema": {"type": types[kind]},
            }
            for param, (_, kind, description) in getattr(view, "filter_fields", {}).items()
        ]


class AddressSearch(filters.BaseFilterBackend):
    """`?search=` by the start of an address: `bob`, `bob@`, `@example.test`, `bob@ex`.

    Prefix matches are ranges on the indexes of local part and domain name (no scan at 1M rows).
    """

    def filter_queryset(self, request, queryset, view):
        from accounts.admin import search_addresses

        if not getattr(view, "search", False):
            return queryset
        return search_addresses(queryset, request.query_params.get("search", ""))

    def get_schema_operation_parameters(self, view):
        if not getattr(view, "search", False):
            return []
        return [{
            "name": "search", "required": False, "in": "query",
            "description": "The start of an address: bob, bob@, @example.test",
            "schema": {"type": "string"},
        }]


class CSVParser(BaseParser):
    """A request body of CSV text (UTF-8): handed to the view as one string."""

    media_type = "text/csv"

    def parse(self, stream, media_type=None, parser_context=None):
        from api.csvio import MAX_BYTES

        data = stream.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            raise exceptions.ParseError(f"the file is larger than {MAX_BYTES // (1024 * 1024)} MiB")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise exceptions.ParseError("the file is not UTF-8 text") from None
