"""Tests for relaymq.core.subjects: grammar, matching, overlap, the index, foreign mappings."""

from __future__ import annotations

import contextlib
import itertools
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relaymq.core.subjects import (
    MAX_MAPPED_FILTERS,
    MAX_SUBJECT_BYTES,
    MAX_SUBJECT_TOKENS,
    SubjectFilter,
    SubjectIndex,
    amqp_binding_to_subject_filter,
    filters_overlap,
    mqtt_filter_to_subject_filter,
    mqtt_topic_to_subject,
    subject_matches,
    validate_filter,
    validate_subject,
)
from relaymq.errors import InvalidArgument, InvalidSubject

# -- grammar ---------------------------------------------------------------------------

VALID_SUBJECTS = [
    "a",
    "orders.eu.created",
    "a-b_c.d$e.#f",
    "ключ.値.😀",
    "x" * MAX_SUBJECT_BYTES,
    ".".join(["t"] * MAX_SUBJECT_TOKENS),
    "é" * (MAX_SUBJECT_BYTES // 2),
]

INVALID_SUBJECTS = [
    ("", "empty"),
    (".", "empty_token"),
    ("a.", "empty_token"),
    (".a", "empty_token"),
    ("a..b", "empty_token"),
    ("a b", "forbidden_character"),
    ("a\tb", "forbidden_character"),
    ("a\nb", "forbidden_character"),
    ("a\x00b", "forbidden_character"),
    ("a\x7fb", "forbidden_character"),
    ("a\x85b", "forbidden_character"),
    ("a\u00a0b", "forbidden_character"),
    ("a\u2028b", "forbidden_character"),
    ("a\ud800b", "forbidden_character"),
    ("a.*", "wildcard_in_subject"),
    ("a.>", "wildcard_in_subject"),
    ("a*b", "wildcard_in_subject"),
    ("x" * (MAX_SUBJECT_BYTES + 1), "too_long"),
    ("é" * (MAX_SUBJECT_BYTES // 2 + 1), "too_long"),
    (".".join(["t"] * (MAX_SUBJECT_TOKENS + 1)), "too_many_tokens"),
]


@pytest.mark.parametrize("subject", VALID_SUBJECTS)
def test_valid_subjects_pass_as_subjects_and_filters(subject: str) -> None:
    validate_subject(subject)
    validate_filter(subject)


@pytest.mark.parametrize(("subject", "reason"), INVALID_SUBJECTS)
def test_invalid_subjects_name_their_reason(subject: str, reason: str) -> None:
    with pytest.raises(InvalidSubject) as caught:
        validate_subject(subject)
    assert caught.value.details["reason"] == reason
    assert caught.value.details["kind"] == "subject"
    assert caught.value.code == "invalid_subject"
    assert isinstance(caught.value, InvalidArgument)


@pytest.mark.parametrize("subject_filter", ["*", ">", "a.*", "a.>", "*.*.>", "a.*.c", "*.b.>"])
def test_valid_filters(subject_filter: str) -> None:
    validate_filter(subject_filter)


@pytest.mark.parametrize(
    ("subject_filter", "reason"),
    [
        ("a.>.b", "full_wildcard_not_last"),
        (">.>", "full_wildcard_not_last"),
        ("a*", "partial_wildcard"),
        ("a.b>", "partial_wildcard"),
        ("**", "partial_wildcard"),
        ("a.>>", "partial_wildcard"),
        ("a..*", "empty_token"),
        ("a.* ", "forbidden_character"),
        ("", "empty"),
    ],
)
def test_invalid_filters(subject_filter: str, reason: str) -> None:
    with pytest.raises(InvalidSubject) as caught:
        validate_filter(subject_filter)
    assert caught.value.details["reason"] == reason
    assert caught.value.details["kind"] == "filter"


@pytest.mark.parametrize("value", [None, 1, b"a.b", ["a"], 1.5])
def test_non_strings_raise_invalid_subject(value: object) -> None:
    for validate in (validate_subject, validate_filter):
        with pytest.raises(InvalidSubject) as caught:
            validate(value)
        assert caught.value.details["reason"] == "not_a_string"


def test_error_details_are_short_and_json_able() -> None:
    with pytest.raises(InvalidSubject) as caught:
        validate_subject("x" * 100_000)
    details = caught.value.to_dict()["details"]
    assert len(details["subject"]) <= 100
    assert set(details) == {"subject", "kind", "reason"}


@given(st.text())
@settings(max_examples=300)
def test_validation_raises_only_invalid_subject(text: str) -> None:
    for validate in (validate_subject, validate_filter):
        with contextlib.suppress(InvalidSubject):
            validate(text)


@given(st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=20))
def test_whitespace_is_rejected_whatever_its_kind(text: str) -> None:
    if any(character.isspace() for character in text):
        with pytest.raises(InvalidSubject):
            validate_filter(text)


# -- matching --------------------------------------------------------------------------

MATCH_CASES = [
    ("a.b.c", "a.b.c", True),
    ("a.b.c", "a.b", False),
    ("a.*.c", "a.x.c", True),
    ("a.*.c", "a.x.y.c", False),
    ("a.*", "a", False),
    ("a.>", "a", False),
    ("a.>", "a.b", True),
    ("a.>", "a.b.c.d", True),
    (">", "a", True),
    (">", "a.b.c", True),
    ("*", "a", True),
    ("*", "a.b", False),
    ("*.>", "a", False),
    ("*.>", "a.b", True),
    ("a", "a.b", False),
]


@pytest.mark.parametrize(("subject_filter", "subject", "expected"), MATCH_CASES)
def test_subject_matches(subject_filter: str, subject: str, expected: bool) -> None:
    assert subject_matches(subject_filter, subject) is expected
    assert SubjectFilter(subject_filter)(subject) is expected


def test_subject_filter_value_semantics() -> None:
    assert SubjectFilter("a.*") == SubjectFilter("a.*")
    assert len({SubjectFilter("a.*"), SubjectFilter("a.*")}) == 1
    assert repr(SubjectFilter(">")) == "SubjectFilter('>')"
    with pytest.raises(InvalidSubject):
        SubjectFilter("a.>.b")


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ("a.*", "a.>", True),
        ("a.*", "a.b.c", False),
        ("a.>", "a", False),
        ("*.b", "a.*", True),
        ("a.b", "a.b", True),
        ("a.b", "a.c", False),
        (">", "a", True),
        (">", "a.>", True),
        ("*", "a.b", False),
        ("*.*", "a.>", True),
        ("a.*.c", "a.b.d", False),
    ],
)
def test_filters_overlap(first: str, second: str, expected: bool) -> None:
    assert filters_overlap(first, second) is expected
    assert filters_overlap(second, first) is expected


# -- brute-force universe for property tests ------------------------------------------

TOKENS = ["a", "b", "c"]
MAX_UNIVERSE_TOKENS = 5
# Every subject of 1..5 tokens over TOKENS: 363 subjects. Filters in the property
# tests have at most 4 tokens, so any overlap has a witness of at most 5 tokens
# (a '>' needs one more token beyond the shorter filter).
UNIVERSE = [
    ".".join(combination)
    for length in range(1, MAX_UNIVERSE_TOKENS + 1)
    for combination in itertools.product(TOKENS, repeat=length)
]

subject_tokens = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=MAX_UNIVERSE_TOKENS)
subjects = subject_tokens.map(".".join)


@st.composite
def filters(draw: st.DrawFn) -> str:
    tokens = draw(st.lists(st.sampled_from([*TOKENS, "*"]), min_size=0, max_size=4))
    if not tokens or draw(st.booleans()):
        tokens.append(draw(st.sampled_from([*TOKENS, "*", ">"])))
    return ".".join(tokens)


@given(filters(), filters())
@settings(max_examples=400)
def test_filters_overlap_agrees_with_brute_force(first: str, second: str) -> None:
    witnessed = any(
        subject_matches(first, subject) and subject_matches(second, subject) for subject in UNIVERSE
    )
    assert filters_overlap(first, second) is witnessed


@given(filters(), subjects)
def test_compiled_filter_agrees_with_subject_matches(subject_filter: str, subject: str) -> None:
    assert SubjectFilter(subject_filter)(subject) is subject_matches(subject_filter, subject)


# -- the index -------------------------------------------------------------------------


def brute_force_match(entries: set[tuple[str, int]], subject: str) -> set[int]:
    return {value for subject_filter, value in entries if subject_matches(subject_filter, subject)}


@given(
    st.lists(st.tuples(filters(), st.integers(0, 6)), max_size=25),
    st.lists(subjects, min_size=1, max_size=10),
)
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_index_match_equals_brute_force(entries: list[tuple[str, int]], probes: list[str]) -> None:
    index: SubjectIndex[int] = SubjectIndex(cache_size=4)
    for subject_filter, value in entries:
        index.add(subject_filter, value)
    assert len(index) == len(set(entries))
    for subject in probes * 2:  # twice: the second pass may come from the cache
        found = index.match(subject)
        assert len(found) == len(set(found))
        assert set(found) == brute_force_match(set(entries), subject)


@given(
    st.lists(st.tuples(filters(), st.integers(0, 6)), max_size=25),
    st.data(),
)
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_index_after_removals_equals_brute_force(
    entries: list[tuple[str, int]], data: st.DataObject
) -> None:
    index: SubjectIndex[int] = SubjectIndex(cache_size=8)
    live = set()
    for subject_filter, value in entries:
        index.add(subject_filter, value)
        live.add((subject_filter, value))
        index.match("a.b")  # fill the cache so removal must invalidate it
    for entry in data.draw(st.lists(st.sampled_from(entries))) if entries else []:
        assert index.remove(*entry) is (entry in live)
        live.discard(entry)
        assert len(index) == len(live)
        assert set(index.match("a.b")) == brute_force_match(live, "a.b")
    for subject in UNIVERSE[:40]:
        assert set(index.match(subject)) == brute_force_match(live, subject)
    if not live:
        assert index._root.is_empty()  # pruned: removed filters leave no nodes


@given(st.lists(st.tuples(filters(), st.integers(0, 6)), max_size=25), filters())
@settings(max_examples=150)
def test_index_overlapping_equals_brute_force(entries: list[tuple[str, int]], probe: str) -> None:
    index: SubjectIndex[int] = SubjectIndex()
    for subject_filter, value in entries:
        index.add(subject_filter, value)
    expected = {
        value for subject_filter, value in entries if filters_overlap(subject_filter, probe)
    }
    found = index.overlapping(probe)
    assert len(found) == len(set(found))
    assert set(found) == expected


def test_index_reports_a_value_once_across_filters() -> None:
    index: SubjectIndex[str] = SubjectIndex()
    for subject_filter in ("orders.>", "orders.*.created", "orders.eu.created", ">"):
        assert index.add(subject_filter, "orders-stream")
    assert not index.add("orders.>", "orders-stream")
    assert index.match("orders.eu.created") == ["orders-stream"]
    assert len(index) == 4


def test_index_cache_is_bounded_and_invalidated() -> None:
    index: SubjectIndex[str] = SubjectIndex(cache_size=2)
    index.add("a.*", "first")
    assert index.match("a.x") == ["first"]
    index.match("a.y")
    index.match("a.z")
    assert len(index._cache) == 2
    index.add("a.x", "second")
    assert sorted(index.match("a.x")) == ["first", "second"]
    index.remove("a.*", "first")
    assert index.match("a.x") == ["second"]
    assert index.match("a.y") == []


def test_index_match_result_is_a_copy() -> None:
    index: SubjectIndex[str] = SubjectIndex()
    index.add("a", "value")
    index.match("a").append("mutated")
    assert index.match("a") == ["value"]


def test_index_rejects_invalid_filters() -> None:
    index: SubjectIndex[str] = SubjectIndex()
    with pytest.raises(InvalidSubject):
        index.add("a.>.b", "value")
    with pytest.raises(InvalidSubject):
        index.overlapping("")
    assert not index.remove("a.b", "absent")
    assert len(index) == 0


def test_index_match_is_fast_with_many_filters() -> None:
    index: SubjectIndex[int] = SubjectIndex(cache_size=0)
    for number in range(1_000):
        index.add(f"tenant{number % 50}.orders.{number}.*", number)
    index.add("tenant7.>", -1)
    subject = "tenant7.orders.507.created"
    started = time.perf_counter()
    for _ in range(10_000):
        found = index.match(subject)
    elapsed = time.perf_counter() - started
    assert sorted(found) == [-1, 507]
    # A scan of 1,000 filters per match would take far longer than this.
    assert elapsed < 1.0


# -- MQTT ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic_filter", "expected"),
    [
        ("a/b/c", ["a.b.c"]),
        ("a/+/c", ["a.*.c"]),
        ("+", ["*"]),
        ("#", [">"]),
        ("a/#", ["a", "a.>"]),
        ("+/#", ["*", "*.>"]),
        ("a/+/#", ["a.*", "a.*.>"]),
    ],
)
def test_mqtt_filter_mapping(topic_filter: str, expected: list[str]) -> None:
    assert mqtt_filter_to_subject_filter(topic_filter) == expected


@pytest.mark.parametrize(
    ("topic_filter", "reason"),
    [
        ("", "empty"),
        ("a/#/b", "multi_wildcard_not_last"),
        ("a#", "partial_wildcard"),
        ("a/b+", "partial_wildcard"),
        ("a//b", "unmappable_token"),
        ("/a", "unmappable_token"),
        ("a/", "unmappable_token"),
        ("a.b/c", "unmappable_token"),
        ("a/*", "unmappable_token"),
        ("a/>", "unmappable_token"),
        ("a b/c", "forbidden_character"),
        ("/".join(["t"] * (MAX_SUBJECT_TOKENS + 1)), "too_long"),
    ],
)
def test_mqtt_filter_rejections(topic_filter: str, reason: str) -> None:
    with pytest.raises(InvalidSubject) as caught:
        mqtt_filter_to_subject_filter(topic_filter)
    assert caught.value.details["reason"] == reason


def test_mqtt_hash_beyond_the_token_limit_keeps_the_parent() -> None:
    levels = "/".join(["t"] * MAX_SUBJECT_TOKENS)
    assert mqtt_filter_to_subject_filter(levels + "/#") == [".".join(["t"] * MAX_SUBJECT_TOKENS)]


def test_mqtt_topic_mapping() -> None:
    assert mqtt_topic_to_subject("home/kitchen/temperature") == "home.kitchen.temperature"
    for bad in ("a/+", "a/#", "a//b", "a.b", "", "a/b c"):
        with pytest.raises(InvalidSubject):
            mqtt_topic_to_subject(bad)


def mqtt_matches(topic_filter: str, topic: str) -> bool:
    """MQTT 3.1.1 §4.7 semantics, written independently of the subject code."""
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True  # matches the parent level and anything below
        if index >= len(topic_levels):
            return False
        if level != "+" and level != topic_levels[index]:
            return False
    return len(filter_levels) == len(topic_levels)


@st.composite
def mqtt_filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(st.sampled_from([*TOKENS, "+"]), min_size=0, max_size=4))
    if not levels or draw(st.booleans()):
        levels.append(draw(st.sampled_from([*TOKENS, "+", "#"])))
    return "/".join(levels)


@given(mqtt_filters(), st.lists(subject_tokens.map("/".join), min_size=1, max_size=20))
def test_mqtt_mapping_agrees_with_mqtt_semantics(topic_filter: str, topics: list[str]) -> None:
    subject_filters = mqtt_filter_to_subject_filter(topic_filter)
    assert not any(
        filters_overlap(first, second)
        for first, second in itertools.combinations(subject_filters, 2)
    )
    for topic in topics:
        subject = mqtt_topic_to_subject(topic)
        mapped = any(subject_matches(f, subject) for f in subject_filters)
        assert mapped is mqtt_matches(topic_filter, topic)


# -- AMQP ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("binding_key", "expected"),
    [
        ("a.b.c", ["a.b.c"]),
        ("a.*", ["a.*"]),
        ("#", [">"]),
        ("#.#", [">"]),
        ("a.#", ["a", "a.>"]),
        ("a.#.*", ["a.*", "a.*.>"]),
        ("*.#", ["*", "*.>"]),
        ("a#.b", ["a#.b"]),
    ],
)
def test_amqp_binding_mapping(binding_key: str, expected: list[str]) -> None:
    assert amqp_binding_to_subject_filter(binding_key) == expected


def test_amqp_inner_hash_expands_to_the_token_limit() -> None:
    mapped = amqp_binding_to_subject_filter("#.error")
    assert mapped[:3] == ["error", "*.error", "*.*.error"]
    assert len(mapped) == MAX_SUBJECT_TOKENS
    for subject_filter in mapped:
        validate_filter(subject_filter)


@pytest.mark.parametrize(
    ("binding_key", "reason"),
    [
        ("", "empty"),
        ("a..b", "unmappable_token"),
        ("a.", "unmappable_token"),
        ("a*", "unmappable_token"),
        ("a.>", "unmappable_token"),
        ("a b", "forbidden_character"),
        ("#.a.#.b", "too_many_filters"),
    ],
)
def test_amqp_binding_rejections(binding_key: str, reason: str) -> None:
    with pytest.raises(InvalidSubject) as caught:
        amqp_binding_to_subject_filter(binding_key)
    assert caught.value.details["reason"] == reason


def amqp_matches(words: list[str], routing_words: list[str]) -> bool:
    """RabbitMQ topic-exchange semantics: '*' one word, '#' zero or more, anywhere."""
    if not words:
        return not routing_words
    head, rest = words[0], words[1:]
    if head == "#":
        return any(
            amqp_matches(rest, routing_words[skip:]) for skip in range(len(routing_words) + 1)
        )
    if not routing_words:
        return False
    return (head == "*" or head == routing_words[0]) and amqp_matches(rest, routing_words[1:])


amqp_bindings = st.lists(st.sampled_from([*TOKENS, "*", "#"]), min_size=1, max_size=4).map(".".join)


@given(amqp_bindings, st.lists(subjects, min_size=1, max_size=20))
def test_amqp_mapping_agrees_with_amqp_semantics(binding_key: str, routing_keys: list[str]) -> None:
    try:
        subject_filters = amqp_binding_to_subject_filter(binding_key)
    except InvalidSubject as error:
        assert error.details["reason"] == "too_many_filters"
        return
    assert len(subject_filters) <= MAX_MAPPED_FILTERS
    for routing_key in routing_keys:
        mapped = any(subject_matches(f, routing_key) for f in subject_filters)
        assert mapped is amqp_matches(binding_key.split("."), routing_key.split("."))


@given(st.text(max_size=40))
@settings(max_examples=200)
def test_foreign_mappings_raise_only_invalid_subject(text: str) -> None:
    for mapping in (
        mqtt_filter_to_subject_filter,
        mqtt_topic_to_subject,
        amqp_binding_to_subject_filter,
    ):
        try:
            result = mapping(text)
        except InvalidSubject:
            continue
        for subject_filter in [result] if isinstance(result, str) else result:
            validate_filter(subject_filter)
