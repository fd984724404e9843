"""New mail without reloading: server-sent events fed by the change bus.

Implementation notes:
- One long response per open tab, served by an async view (runweb is uvicorn, ASGI):
  the change bus (mailstore.events) calls our callback on its thread; the callback
  only hands the change to the response's event loop (call_soon_threadsafe), never
  blocks. The account is checked once, at connect; the stream ends after
  MAX_SECONDS and the browser reconnects, which checks the session again.
- Events are hints (as the bus says): the page re-reads what it shows. The payload
  names the kind and folder, nothing from the mail itself.
- Bounded: at most QUEUE_SIZE changes wait per stream; past that the stream sends one
  "resync" and drops the rest, so a burst of deliveries cannot grow memory.
"""
import asyncio
import json
import time

from asgiref.sync import sync_to_async
from django.http import HttpResponse, StreamingHttpResponse

from mailstore import events
from webmail.auth import current_account

KEEPALIVE_SECONDS = 20
MAX_SECONDS = 600
QUEUE_SIZE = 100
RETRY_MS = 3000


def format_event(change):
    """One SSE message for a mailstore.events.Change."""
    data = json.dumps({"kind": change.kind, "folder": change.folder_id}, separators=(",", ":"))
    return f"event: change\ndata: {data}\n\n"


RESYNC = 'event: change\ndata: {"kind":"resync","folder":null}\n\n'


async def _stream(account_id, clock=time.monotonic):
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue(QUEUE_SIZE)
    overflowed = False

    def put(change):
        nonlocal overflowed
        try:
            queue.put_nowait(change)
        except asyncio.QueueFull:
            overflowed = True

    def on_change(change):  # on the bus's thread: hand over, never block
        if change.kind != "opened":  # nothing changed: an IMAP worker read a folder
            loop.call_soon_threadsafe(put, change)

    unsubscribe = await sync_to_async(events.subscribe, thread_sensitive=False)(on_change, account_id=account_id)
    try:
        yield f"retry: {RETRY_MS}\n: connected\n\n"
        deadline = clock() + MAX_SECONDS
        while clock() < deadline:
            try:
                change = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
            except asyncio.TimeoutError:
                yield ": keepalive\n\n"
                continue
            if overflowed:
                overflowed = False
                while not queue.empty():
                    queue.get_nowait()
                yield RESYNC
            else:
                yield format_event(change)
    finally:
        unsubscribe()


async def stream(request):
    if request.method != "GET":
        return HttpResponse(status=405, headers={"Allow": "GET"})
    account = await sync_to_async(current_account)(request)
    if account is None:
        return HttpResponse(status=401)
    response = StreamingHttpResponse(_stream(account.pk), content_type="text/event-stream")
    response["Cache-Control"] = "no-store"
    response["X-Accel-Buffering"] = "no"  # a proxy must pass events on at once
    return response
