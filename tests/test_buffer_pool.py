"""``engine.pool.BufferPool``: a few large buffers lent over and over and given back by
``release``; ``lease`` waits while all are out, and ``close`` wakes a waiter for good."""

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
    assert again.buffer is buffer  # the same memory, lent again
    again.release()
    big = pool.lease(MIN_BUFFER_BYTES + 1)
    assert len(big.buffer) >= MIN_BUFFER_BYTES + 1  # grown for the larger block


def test_a_waiter_gets_the_buffer_released_and_a_second_release_is_harmless():
    pool = BufferPool(1)
    lease = pool.lease(10)
    got = []
    waiter = threading.Thread(target=lambda: got.append(pool.lease(10)))
    waiter.start()
    time.sleep(0.2)
    assert not got  # every buffer is out: the waiter waits
    lease.release()
    waiter.join(timeout=5)
    assert got and got[0].buffer is lease.buffer
    lease.release()  # released twice: the pool is not given it twice
    other = []
    late = threading.Thread(target=lambda: other.append(pool.lease(10)))
    late.start()
    time.sleep(0.2)
    assert not other  # the only buffer is still lent to the waiter
    got[0].release()
    late.join(timeout=5)
    assert other


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
