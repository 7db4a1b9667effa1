"""``engine.pool.BufferPool``: a few large buffers lent over and over, returned when every holder
has released them; ``lease`` waits while all are out, and ``close`` wakes a waiter for good."""

import threading
import time

import pytest

from engine.pool import MIN_BUFFER_BYTES, BufferPool, PoolClosed


def test_buffers_are_reused_and_grow_with_room():
    pool = BufferPool(2)
    first = pool.lease(100)
    assert len(first.buffer) >= MIN_BUFFER_BYTES
    buffer = first.buffer
    first.release()
    again = pool.lease(200)
    assert again.buffer is buffer                      # the same memory, lent again
    again.release()
    big = pool.lease(MIN_BUFFER_BYTES + 1)
    assert len(big.buffer) >= MIN_BUFFER_BYTES + 1     # grown for the larger block


def test_a_buffer_returns_only_when_every_holder_released_it():
    pool = BufferPool(1)
    lease = pool.lease(10)
    lease.hold()
    lease.release()
    got = []
    waiter = threading.Thread(target=lambda: got.append(pool.lease(10)))
    waiter.start()
    time.sleep(0.2)
    assert not got                                     # still held once: the waiter waits
    lease.release()
    waiter.join(timeout=5)
    assert got and got[0].buffer is lease.buffer


def test_close_wakes_a_waiter_with_pool_closed():
    pool = BufferPool(1)
    pool.lease(10)
    errors = []

    def wait():
        try:
            pool.lease(10)
        except PoolClosed as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.1)
    pool.close()
    waiter.join(timeout=5)
    assert not waiter.is_alive() and len(errors) == 1
    with pytest.raises(PoolClosed):
        pool.lease(10)
