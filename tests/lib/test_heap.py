"""freeze_startup_heap(): what exists when a server starts serving is no longer walked by
the collector; what it allocates afterwards still is."""
import gc

import pytest

from mailsuite.lib.heap import freeze_startup_heap


@pytest.fixture
def thawed_afterwards():
    yield
    gc.unfreeze()


def tracked(thing):
    return any(candidate is thing for candidate in gc.get_objects())


def test_it_sets_aside_the_objects_made_before_it_and_no_later_ones(thawed_afterwards):
    before = [object()]
    assert tracked(before)
    assert freeze_startup_heap() >= 1
    after = [object()]
    assert not tracked(before)
    assert tracked(after)
