"""mailsuite.lib.inline: must_wait() stops work only inside in_memory()."""
import threading

import pytest

from mailsuite.lib import inline


def test_outside_in_memory_waiting_is_allowed():
    inline.must_wait("the database")  # nothing happens
    assert not inline.active()


def test_inside_in_memory_waiting_raises_would_block():
    with pytest.raises(inline.WouldBlock, match="the database"), inline.in_memory():
        inline.must_wait("the database")
    assert not inline.active()


def test_would_block_passes_through_except_exception():
    # Libraries between a check and its lookups turn an Exception into a result; this must not be one.
    def library_call():
        try:
            inline.must_wait("DNS example.test")
        except Exception:
            return "DNS error"

    with pytest.raises(inline.WouldBlock), inline.in_memory():
        library_call()


def test_in_memory_is_per_thread():
    seen = []
    with inline.in_memory():
        thread = threading.Thread(target=lambda: seen.append(inline.active()))
        thread.start()
        thread.join()
        assert inline.active()
    assert seen == [False]


def test_nested_blocks_restore_the_outer_state():
    with inline.in_memory():
        with inline.in_memory():
            pass
        assert inline.active()
    assert not inline.active()
