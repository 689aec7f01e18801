"""The background batch prefetcher: same items in the same order, errors in place, clean stop."""

import threading
import time

import pytest

from codereason_jax.prefetch import Prefetcher


class Counting:
    """An endless iterator that records how far it has been read, with an attribute."""

    plan = "the plan"

    def __init__(self, fail_at=None):
        self.produced = 0
        self.fail_at = fail_at

    def __iter__(self):
        return self

    def __next__(self):
        if self.produced == self.fail_at:
            raise ValueError(f"bad record at {self.produced}")
        self.produced += 1
        return self.produced - 1


def wait_until_blocked(prefetcher, guard_s=60):
    """Block until the producer waits on a full queue: its state, not a time, tells when no more
    items can be made. (The queue's ``not_full`` condition lists the threads waiting to put;
    the producer waits there in slices of 0.1 s, so it is seen at once or within one slice.)
    ``guard_s`` only bounds a hang."""
    q = prefetcher._queue
    give_up = time.monotonic() + guard_s
    while True:
        with q.mutex:
            if q._qsize() >= q.maxsize and q.not_full._waiters:  # q.full() would re-lock
                return
        assert prefetcher._thread.is_alive(), "the producer ended"
        assert time.monotonic() < give_up, "the producer never blocked on the full queue"
        time.sleep(0.001)


def test_items_arrive_in_order_and_the_lookahead_is_bounded():
    source = Counting()
    prefetcher = Prefetcher(source, depth=3)
    assert [next(prefetcher) for _ in range(50)] == list(range(50))
    wait_until_blocked(prefetcher)
    # 50 consumed, 3 queued and exactly one more, held by the producer blocked on the queue.
    assert source.produced == 54
    assert prefetcher._queue.qsize() == 3
    assert prefetcher.plan == "the plan"  # attributes of the wrapped iterator
    prefetcher.close()
    assert not prefetcher._thread.is_alive()


def test_an_error_is_raised_where_it_happened_and_finite_iterators_end():
    prefetcher = Prefetcher(Counting(fail_at=4))
    assert [next(prefetcher) for _ in range(4)] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="bad record at 4"):
        next(prefetcher)
    with pytest.raises(StopIteration):
        next(prefetcher)
    assert list(Prefetcher(iter(range(5)), depth=2)) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="must be >= 1"):
        Prefetcher(iter(()), depth=0)


def test_close_releases_a_producer_blocked_on_a_full_queue():
    prefetcher = Prefetcher(Counting(), depth=1)
    next(prefetcher)
    wait_until_blocked(prefetcher)  # the producer now waits on the full queue
    thread = prefetcher._thread
    assert thread in threading.enumerate()
    prefetcher.close(timeout=60)  # joins the thread; the timeout only bounds a hang
    assert not thread.is_alive() and thread not in threading.enumerate()
