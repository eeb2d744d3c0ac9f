"""Identifiers: unique, sortable by creation time, and never shared with a forked child."""

from __future__ import annotations

import os

import pytest

from gateway import ids


def test_ids_are_unique_and_sort_by_creation_time() -> None:
    made = [ids.new_id(ids.DELIVERY, now=1_700_000_000.0 + i / 1000) for i in range(5_000)]
    assert len(set(made)) == len(made)  # the random part runs through several pools
    assert made == sorted(made)
    assert all(i.startswith("dlv_") and len(i) == 4 + 32 for i in made)
    same_ms = [ids.new_id(ids.EVENT, now=1_700_000_000.0) for _ in range(1_000)]
    assert len(set(same_ms)) == len(same_ms)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_reuse_the_parents_random_bytes() -> None:
    ids.new_id(ids.EVENT)  # the pool now holds bytes for the next ids
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        os.write(write, ids.new_id(ids.EVENT, now=0.0).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = pipe.read().decode()
    os.waitpid(pid, 0)
    parent = ids.new_id(ids.EVENT, now=0.0)
    assert child and child != parent
    assert child[-20:] != parent[-20:]
