"""Tests for relaymq.core.partitioning: the pinned key mapping and round robin."""

from __future__ import annotations

import collections
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relaymq.core.partitioning import Partitioner, RoundRobinPartitioner, partition_for_key
from relaymq.errors import InvalidArgument

# Pinned outputs: the key → partition mapping is part of the on-disk contract.
# If one of these changes, stored keys would move partitions; do not "fix" the vectors.
KNOWN_VECTORS = [
    ("", 16, 2),
    ("a", 16, 15),
    ("order-1", 16, 6),
    ("user:42", 16, 10),
    ("ключ", 16, 14),
    ("😀", 16, 14),
    ("", 7, 4),
    ("a", 7, 1),
    ("user:42", 7, 4),
    # With 2**64 partitions the result is the raw xxh3_64 digest; the empty input's
    # digest 0x2D06800538D394C2 is the reference value published with XXH3.
    ("", 2**64, 0x2D06800538D394C2),
    ("order-1", 2**64, 6900751593513035894),
]


@pytest.mark.parametrize(("key", "partitions", "expected"), KNOWN_VECTORS)
def test_known_vectors(key: str, partitions: int, expected: int) -> None:
    assert partition_for_key(key, partitions) == expected


def test_mapping_is_stable_across_processes() -> None:
    # A fresh interpreter with a different hash seed must agree: no use of hash().
    code = "from relaymq.core.partitioning import partition_for_key as p; print(p('user:42', 16))"
    output = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345"},
    ).stdout
    assert output.strip() == "10"


def test_distribution_is_roughly_uniform() -> None:
    counts = collections.Counter(partition_for_key(f"key-{number}", 16) for number in range(10_000))
    assert set(counts) == set(range(16))
    # Expected 625 per partition; a binomial standard deviation is ~24, so
    # +/- 125 is over five deviations: fails only if the hash is badly skewed.
    assert all(500 <= count <= 750 for count in counts.values()), counts


@given(st.text(), st.integers(1, 1_000))
def test_any_key_has_a_partition_in_range(key: str, partitions: int) -> None:
    assert 0 <= partition_for_key(key, partitions) < partitions


def test_lone_surrogates_hash_instead_of_raising() -> None:
    assert 0 <= partition_for_key("\ud800", 8) < 8


@pytest.mark.parametrize("partitions", [0, -1, 1.5, True, "4", None])
def test_bad_partition_counts_are_rejected(partitions: object) -> None:
    with pytest.raises(InvalidArgument):
        partition_for_key("a", partitions)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        RoundRobinPartitioner(partitions)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        Partitioner(partitions)  # type: ignore[arg-type]


def test_round_robin_cycles() -> None:
    round_robin = RoundRobinPartitioner(3)
    assert [round_robin.next() for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_round_robin_start_wraps() -> None:
    round_robin = RoundRobinPartitioner(4, start=6)
    assert [round_robin.next() for _ in range(5)] == [2, 3, 0, 1, 2]


def test_partitioner_uses_the_key_when_there_is_one() -> None:
    partitioner = Partitioner(16)
    assert [partitioner.choose("user:42") for _ in range(3)] == [10, 10, 10]
    assert partitioner.choose("") == partition_for_key("", 16)
    assert [partitioner.choose(None) for _ in range(17)] == [*range(16), 0]


@given(st.text(), st.integers(1, 64))
def test_partitioner_agrees_with_partition_for_key(key: str, partitions: int) -> None:
    assert Partitioner(partitions).choose(key) == partition_for_key(key, partitions)


def test_keyless_messages_avoid_the_partitions_avoided_while_one_is_left() -> None:
    partitioner = Partitioner(4)
    partitioner.avoid(1)
    partitioner.avoid(2)
    assert [partitioner.choose(None) for _ in range(6)] == [0, 3, 0, 3, 0, 3]
    assert partitioner.choose("k") == partition_for_key("k", 4)  # a key keeps its partition
    partitioner.avoid(0)
    partitioner.avoid(3)  # none left: round robin over all again
    assert sorted(partitioner.choose(None) for _ in range(4)) == [0, 1, 2, 3]
