"""A file target read twice without a change in between is decoded once: the second
read is one ``lstat`` that finds the same inode, times and size. Only a file last
changed more than ``SETTLED_NS`` ago is remembered, so a replacement within the file
system's timestamp granularity can never pass for the file read before."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rotator.errors import StoreRejected
from rotator.stores.file import SETTLED_NS, FileStore
from rotator.token import Token


def token(offset: int = 0, text: str = "") -> Token:
    at = datetime(2026, 11, 28, 12, 0, tzinfo=UTC) + timedelta(seconds=offset)
    return Token(text or f"tok-{offset}", "Bearer", at, at + timedelta(seconds=300))


def later() -> int:
    """A clock far enough ahead that every file counts as settled."""
    return time.time_ns() + 10 * SETTLED_NS


def test_a_settled_unchanged_file_is_not_read_again(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "t.json", now_ns=later)
    store.put(token(1))
    first = store.get()
    assert first.token == token(1)
    assert store.get() is first  # the remembered reading, not a new decode


def test_a_file_changed_within_the_settle_time_is_read_every_time(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "t.json")  # the real clock: the file was just written
    store.put(token(1))
    first = store.get()
    second = store.get()
    assert second == first
    assert second is not first


def test_a_replacement_by_another_writer_is_seen_even_at_the_same_size(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    ours, other = FileStore(path, now_ns=later), FileStore(path, now_ns=later)
    ours.put(token(1, "a" * 20))
    assert ours.get().token == token(1, "a" * 20)
    other.put(token(1, "b" * 20))  # same expiry, same length: only the inode tells
    assert ours.get().token == token(1, "b" * 20)


def test_a_rewrite_in_place_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    store = FileStore(path, now_ns=later)
    store.put(token(1))
    assert store.get().token == token(1)
    before = path.read_text()
    path.write_text(before.replace("tok-1", "tok-9"))  # same size, same inode
    os.utime(path, ns=(0, 0))  # times that cannot match the ones remembered
    reading = store.get()
    assert reading.token is not None
    assert reading.token.access_token == "tok-9"


def test_our_own_write_is_read_back_not_remembered(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "t.json", now_ns=later)
    store.put(token(1))
    assert store.get().token == token(1)
    store.put(token(2))
    assert store.get().token == token(2)


def test_a_symlink_put_in_its_place_is_refused_not_served_from_memory(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    store = FileStore(path, now_ns=later)
    store.put(token(1))
    assert store.get().token == token(1)
    elsewhere = tmp_path / "elsewhere.json"
    path.rename(elsewhere)
    path.symlink_to(elsewhere)
    with pytest.raises(StoreRejected):
        store.get()


def test_a_removed_file_reads_as_missing(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    store = FileStore(path, now_ns=later)
    store.put(token(1))
    assert store.get().token == token(1)
    path.unlink()
    assert store.get().is_missing
