"""Server-sent events: the stream hands change-bus events to the page as hints."""
import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from mailstore import events
from webmail import events as web_events


def test_an_event_names_the_kind_and_folder_only():
    change = events.Change("append", 7, 12, (1, 2, 3), 44)
    assert web_events.format_event(change) == 'event: change\ndata: {"kind":"append","folder":12}\n\n'


def test_the_stream_relays_changes_of_its_account_and_stops_listening_when_closed(settings, tmp_path):
    settings.MAILSUITE_EVENT_BUS = "local"
    settings.DATA_DIR = tmp_path

    async def run():
        stream = web_events._stream(7)
        assert (await stream.__anext__()).startswith("retry: 3000\n")
        events.publish(events.Change("append", 8, 1, (1,), 2))  # another account: not relayed
        events.publish(events.Change("opened", 7, 12, modseq=2))  # nothing changed: not relayed
        events.publish(events.Change("flags", 7, 12, (5,), 3))
        relayed = await asyncio.wait_for(stream.__anext__(), 5)
        await stream.aclose()
        return relayed

    try:
        # A thread of its own: Playwright may be running an event loop in this one.
        with ThreadPoolExecutor(1) as pool:
            relayed = pool.submit(asyncio.run, run()).result(30)
        assert relayed == 'event: change\ndata: {"kind":"flags","folder":12}\n\n'
        assert events._subscribers.get(7, ()) == ()
    finally:
        events.close()


@pytest.mark.django_db
def test_a_signed_out_browser_gets_no_stream(client):
    assert client.get("/events/").status_code == 401
