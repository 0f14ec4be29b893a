"""Subjects: their grammar, filter matching, and the index that routes a subject to values.

A **subject** is a dotted address such as ``orders.eu.created``: one to
``MAX_SUBJECT_TOKENS`` non-empty tokens, at most ``MAX_SUBJECT_BYTES`` bytes of
UTF-8, with no whitespace, no control character and no wildcard character.
A **filter** is a subject in which a token may be a wildcard:

- ``*`` matches exactly one token (``orders.*.created`` matches ``orders.eu.created``);
- ``>`` matches one or more tokens and must be the last token (``orders.>``
  matches ``orders.eu`` and ``orders.eu.created`` but not ``orders``).

Wildcards are whole tokens only: ``ord*`` and ``a.b>`` are invalid. Every
validation failure raises :class:`relaymq.errors.InvalidSubject` whose
``details`` carry ``subject`` (an excerpt), ``kind`` (``subject``/``filter``)
and a stable ``reason`` code.

Matching helpers (:func:`subject_matches`, :func:`filters_overlap`,
:class:`SubjectIndex`) assume their inputs were validated at the edge; they
never validate on the hot path. Note that a filter over the length limits
matches no valid subject: a matching subject has at least as many tokens and
bytes as its filter.

Foreign protocols map onto subjects here, so every adapter maps the same way:

- **MQTT** topic ``a/b/c`` is subject ``a.b.c`` (:func:`mqtt_topic_to_subject`);
  filter ``+`` is ``*``; ``#`` (last level only) matches its parent level and
  everything below it, so ``a/#`` becomes ``[a, a.>]`` and ``#`` alone becomes
  ``[>]`` (:func:`mqtt_filter_to_subject_filter`). Levels that cannot be
  tokens are rejected rather than escaped: empty levels (``a//b``, ``/a``)
  and levels containing ``.``, ``*`` or ``>``. ``$``-prefixed topics get no
  special treatment here; hiding ``$SYS`` from ``#`` is the adapter's job.
- **AMQP 0-9-1** topic routing keys are subjects as they are (validate them
  with :func:`validate_subject`). In a binding key ``*`` is one word and
  ``#`` zero or more words, anywhere in the key. A trailing ``#`` maps to two
  filters (``a.#`` becomes ``[a, a.>]``); a ``#`` elsewhere expands into one
  filter per number of words it may stand for, up to the token limit
  (``#.error`` becomes ``[error, *.error, *.*.error, ...]``), and a binding
  needing more than ``MAX_MAPPED_FILTERS`` filters is rejected
  (:func:`amqp_binding_to_subject_filter`).

Both mappings return ``list[str]``: the union of the filters matches exactly
the subjects the foreign filter matches. Add each one to a
:class:`SubjectIndex` under the same value; the index reports a value once.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, TypeVar

from relaymq.errors import InvalidSubject

MAX_SUBJECT_BYTES = 255
"""Longest subject or filter, in bytes of UTF-8 (AMQP's routing key limit too)."""

MAX_SUBJECT_TOKENS = 32
"""Most tokens in a subject or filter."""

MAX_MAPPED_FILTERS = 64
"""Most subject filters one MQTT or AMQP filter may map to (AMQP ``#`` expands)."""

MATCH_CACHE_SIZE = 1024
"""Default number of subjects whose match results a :class:`SubjectIndex` remembers."""

TOKEN_SEPARATOR = "."
SINGLE_WILDCARD = "*"
FULL_WILDCARD = ">"

MQTT_LEVEL_SEPARATOR = "/"
MQTT_SINGLE_WILDCARD = "+"
MQTT_MULTI_WILDCARD = "#"
AMQP_SINGLE_WILDCARD = "*"
AMQP_MULTI_WILDCARD = "#"

# Whitespace (as str.isspace sees it), C0/C1 controls, and lone surrogates
# (which cannot be encoded as UTF-8, so they could never be stored).
_FORBIDDEN_CHARACTER = re.compile(r"[\s\x00-\x1f\x7f-\x9f\ud800-\udfff]")

_EXCERPT_CHARACTERS = 100

_EXPLANATIONS = {
    "not_a_string": "it is not a string",
    "empty": "it is empty",
    "too_long": f"it is longer than {MAX_SUBJECT_BYTES} bytes of UTF-8",
    "forbidden_character": "it contains whitespace or a control character",
    "too_many_tokens": f"it has more than {MAX_SUBJECT_TOKENS} tokens",
    "empty_token": "it has an empty token (leading, trailing or doubled '.')",
    "wildcard_in_subject": "'*' and '>' are allowed in filters only, not in subjects",
    "partial_wildcard": "a wildcard must be a whole token",
    "full_wildcard_not_last": "'>' may only be the last token",
    "unmappable_token": "a level or word is empty or contains '.', '*' or '>'",
    "multi_wildcard_not_last": "'#' may only be the last level",
    "too_many_filters": f"it maps to more than {MAX_MAPPED_FILTERS} subject filters",
}


def _invalid(text: object, kind: str, reason: str) -> InvalidSubject:
    """Build the error for ``text`` (a subject, filter, or foreign topic) breaking ``reason``."""
    if isinstance(text, str):
        excerpt = text[:_EXCERPT_CHARACTERS]
        message = f"invalid {kind} {excerpt!r}: {_EXPLANATIONS[reason]}"
        return InvalidSubject(message, subject=excerpt, kind=kind, reason=reason)
    type_name = type(text).__name__
    message = f"invalid {kind}: expected a string, got {type_name}"
    return InvalidSubject(message, subject=None, kind=kind, reason=reason, type=type_name)


# -- grammar -------------------------------------------------------------------------


def _split_checked(text: object, kind: str) -> list[str]:
    """Check what subjects and filters share (type, size, characters) and split into tokens."""
    if not isinstance(text, str):
        raise _invalid(text, kind, "not_a_string")
    if not text:
        raise _invalid(text, kind, "empty")
    # Every character is at least one byte: the cheap length rules out huge inputs
    # before the regex scans them.
    if len(text) > MAX_SUBJECT_BYTES:
        raise _invalid(text, kind, "too_long")
    if _FORBIDDEN_CHARACTER.search(text):
        raise _invalid(text, kind, "forbidden_character")
    if not text.isascii() and len(text.encode()) > MAX_SUBJECT_BYTES:
        raise _invalid(text, kind, "too_long")
    tokens = text.split(TOKEN_SEPARATOR)
    if len(tokens) > MAX_SUBJECT_TOKENS:
        raise _invalid(text, kind, "too_many_tokens")
    if "" in tokens:
        raise _invalid(text, kind, "empty_token")
    return tokens


def validate_subject(subject: object) -> None:
    """Raise :class:`InvalidSubject` unless ``subject`` is a valid (wildcard-free) subject."""
    _split_checked(subject, "subject")
    assert isinstance(subject, str)  # _split_checked rejected every non-string
    if SINGLE_WILDCARD in subject or FULL_WILDCARD in subject:
        raise _invalid(subject, "subject", "wildcard_in_subject")


def validate_filter(subject_filter: object) -> None:
    """Raise :class:`InvalidSubject` unless ``subject_filter`` is a valid filter."""
    tokens = _split_checked(subject_filter, "filter")
    last = len(tokens) - 1
    for index, token in enumerate(tokens):
        if token == FULL_WILDCARD and index != last:
            raise _invalid(subject_filter, "filter", "full_wildcard_not_last")
        if len(token) > 1 and (SINGLE_WILDCARD in token or FULL_WILDCARD in token):
            raise _invalid(subject_filter, "filter", "partial_wildcard")


def _within_limits(subject_filter: str) -> bool:
    """Whether a filter built from already-checked tokens fits the size limits."""
    if subject_filter.count(TOKEN_SEPARATOR) >= MAX_SUBJECT_TOKENS:
        return False
    return len(subject_filter.encode()) <= MAX_SUBJECT_BYTES


# -- matching ------------------------------------------------------------------------


def _tokens_match(filter_tokens: list[str], subject_tokens: list[str]) -> bool:
    for index, token in enumerate(filter_tokens):
        if token == FULL_WILDCARD:
            return len(subject_tokens) > index
        if index >= len(subject_tokens):
            return False
        if token != SINGLE_WILDCARD and token != subject_tokens[index]:
            return False
    return len(filter_tokens) == len(subject_tokens)


def subject_matches(subject_filter: str, subject: str) -> bool:
    """Whether ``subject`` matches ``subject_filter``. Both are assumed valid."""
    return _tokens_match(subject_filter.split(TOKEN_SEPARATOR), subject.split(TOKEN_SEPARATOR))


def filters_overlap(first: str, second: str) -> bool:
    """Whether some subject matches both filters. Both are assumed valid.

    Token positions are independent, so the filters overlap exactly when every
    position is compatible (equal, or either is ``*``) up to the first ``>``,
    which needs the other filter to have at least one token left.
    """
    first_tokens = first.split(TOKEN_SEPARATOR)
    second_tokens = second.split(TOKEN_SEPARATOR)
    for index in range(max(len(first_tokens), len(second_tokens))):
        if index >= len(first_tokens) or index >= len(second_tokens):
            return False  # one ended, the other needs more tokens
        first_token, second_token = first_tokens[index], second_tokens[index]
        if FULL_WILDCARD in (first_token, second_token):
            return True  # both have a token here, and '>' takes it and anything after
        if SINGLE_WILDCARD not in (first_token, second_token) and first_token != second_token:
            return False
    return True


class SubjectFilter:
    """A compiled filter: ``SubjectFilter("orders.*")("orders.eu")`` is ``True``.

    Match-all (``>``) and literal filters skip tokenizing. Subjects are assumed valid.
    """

    __slots__ = ("_match_all", "_tokens", "pattern")

    def __init__(self, pattern: str) -> None:
        validate_filter(pattern)
        self.pattern = pattern
        self._match_all = pattern == FULL_WILDCARD
        wild = SINGLE_WILDCARD in pattern or FULL_WILDCARD in pattern
        # None marks a literal filter: plain string equality decides.
        self._tokens = pattern.split(TOKEN_SEPARATOR) if wild else None

    def __call__(self, subject: str) -> bool:
        if self._match_all:
            return True
        if self._tokens is None:
            return subject == self.pattern
        return _tokens_match(self._tokens, subject.split(TOKEN_SEPARATOR))

    def __repr__(self) -> str:
        return f"SubjectFilter({self.pattern!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SubjectFilter) and other.pattern == self.pattern

    def __hash__(self) -> int:
        return hash(self.pattern)


# -- the index -----------------------------------------------------------------------

Value = TypeVar("Value")


class _Node(Generic[Value]):
    """One trie level. Dicts with ``None`` values serve as insertion-ordered sets."""

    __slots__ = ("full", "literals", "single", "values")

    def __init__(self) -> None:
        self.literals: dict[str, _Node[Value]] = {}
        self.single: _Node[Value] | None = None  # the child under '*'
        self.full: dict[Value, None] = {}  # values of filters ending in '>' right here
        self.values: dict[Value, None] = {}  # values of filters ending at this node

    def is_empty(self) -> bool:
        return not (self.literals or self.single or self.full or self.values)

    def children(self) -> Iterator[_Node[Value]]:
        yield from self.literals.values()
        if self.single is not None:
            yield self.single


class SubjectIndex(Generic[Value]):
    """Filters mapped to values, in a token trie: ``match`` costs ~O(tokens), not O(filters).

    The broker keeps one per namespace for subject → stream routing and one
    per stream for subscription filters. Like nats-server's sublist, it keeps
    a bounded LRU cache of match results, cleared on every ``add``/``remove``
    (changes are rare next to publishes). Not thread-safe: one event loop owns it.
    """

    def __init__(self, cache_size: int = MATCH_CACHE_SIZE) -> None:
        self._root: _Node[Value] = _Node()
        self._count = 0
        self._cache_size = cache_size
        self._cache: OrderedDict[str, tuple[Value, ...]] = OrderedDict()

    def __len__(self) -> int:
        """Number of distinct (filter, value) entries."""
        return self._count

    def add(self, subject_filter: str, value: Value) -> bool:
        """Add ``value`` under ``subject_filter``; ``False`` if that pair was already there."""
        validate_filter(subject_filter)
        node = self._root
        target = None
        for token in subject_filter.split(TOKEN_SEPARATOR):
            if token == FULL_WILDCARD:
                target = node.full
                break
            node = _child_for_add(node, token)
        target = node.values if target is None else target
        if value in target:
            return False
        target[value] = None
        self._count += 1
        self._cache.clear()
        return True

    def remove(self, subject_filter: str, value: Value) -> bool:
        """Remove ``value`` from ``subject_filter``; ``False`` if that pair was not there."""
        validate_filter(subject_filter)
        tokens = subject_filter.split(TOKEN_SEPARATOR)
        ends_full = tokens[-1] == FULL_WILDCARD
        path = _find_path(self._root, tokens[:-1] if ends_full else tokens)
        if path is None:
            return False
        node = path[-1][1]
        target = node.full if ends_full else node.values
        if value not in target:
            return False
        del target[value]
        self._count -= 1
        self._cache.clear()
        _prune(path)
        return True

    def match(self, subject: str) -> list[Value]:
        """Values of every filter matching ``subject`` (assumed valid), each once."""
        cached = self._cache.get(subject)
        if cached is not None:
            self._cache.move_to_end(subject)
            return list(cached)
        found: dict[Value, None] = {}
        _collect_matches(self._root, subject.split(TOKEN_SEPARATOR), 0, found)
        if self._cache_size > 0:
            self._cache[subject] = tuple(found)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return list(found)

    def overlapping(self, subject_filter: str) -> list[Value]:
        """Values of every filter that overlaps ``subject_filter`` (see :func:`filters_overlap`)."""
        validate_filter(subject_filter)
        found: dict[Value, None] = {}
        _collect_overlapping(self._root, subject_filter.split(TOKEN_SEPARATOR), 0, found)
        return list(found)


def _child_for_add(node: _Node[Value], token: str) -> _Node[Value]:
    if token == SINGLE_WILDCARD:
        if node.single is None:
            node.single = _Node()
        return node.single
    child = node.literals.get(token)
    if child is None:
        child = node.literals[token] = _Node()
    return child


def _find_path(
    root: _Node[Value], tokens: list[str]
) -> list[tuple[str | None, _Node[Value]]] | None:
    """The (token, node) pairs from the root down along ``tokens``, or None if absent."""
    path: list[tuple[str | None, _Node[Value]]] = [(None, root)]
    node: _Node[Value] | None = root
    for token in tokens:
        assert node is not None
        node = node.single if token == SINGLE_WILDCARD else node.literals.get(token)
        if node is None:
            return None
        path.append((token, node))
    return path


def _prune(path: list[tuple[str | None, _Node[Value]]]) -> None:
    """Unlink empty nodes bottom-up so removed filters do not leak memory."""
    for depth in range(len(path) - 1, 0, -1):
        token, node = path[depth]
        if not node.is_empty():
            return
        parent = path[depth - 1][1]
        if token == SINGLE_WILDCARD:
            parent.single = None
        else:
            del parent.literals[token]


def _collect_matches(
    node: _Node[Value], tokens: list[str], index: int, found: dict[Value, None]
) -> None:
    # Follows the literal branch in a loop and recurses only into '*' branches,
    # so a subject with no wildcard filters on its path costs one dict lookup per token.
    last = len(tokens)
    while index < last:
        if node.full:
            found.update(node.full)
        if node.single is not None:
            _collect_matches(node.single, tokens, index + 1, found)
        next_node = node.literals.get(tokens[index])
        if next_node is None:
            return
        node = next_node
        index += 1
    if node.values:
        found.update(node.values)


def _collect_overlapping(
    node: _Node[Value], tokens: list[str], index: int, found: dict[Value, None]
) -> None:
    if index == len(tokens):
        found.update(node.values)
        return
    found.update(node.full)  # '>' here overlaps anything with a token left
    token = tokens[index]
    if token == FULL_WILDCARD:
        for child in node.children():
            _collect_everything(child, found)
        return
    if node.single is not None:
        _collect_overlapping(node.single, tokens, index + 1, found)
    if token == SINGLE_WILDCARD:
        for child in node.literals.values():
            _collect_overlapping(child, tokens, index + 1, found)
        return
    child = node.literals.get(token)
    if child is not None:
        _collect_overlapping(child, tokens, index + 1, found)


def _collect_everything(node: _Node[Value], found: dict[Value, None]) -> None:
    found.update(node.values)
    found.update(node.full)
    for child in node.children():
        _collect_everything(child, found)


# -- foreign protocols -----------------------------------------------------------------


def _check_foreign_token(token: str, source: str, kind: str) -> None:
    """Reject an MQTT level or AMQP word that cannot be a subject token as it is."""
    if not token or TOKEN_SEPARATOR in token or SINGLE_WILDCARD in token or FULL_WILDCARD in token:
        raise _invalid(source, kind, "unmappable_token")
    if _FORBIDDEN_CHARACTER.search(token):
        raise _invalid(source, kind, "forbidden_character")


def _check_foreign_text(text: object, kind: str) -> str:
    if not isinstance(text, str):
        raise _invalid(text, kind, "not_a_string")
    if not text:
        raise _invalid(text, kind, "empty")
    if len(text) > MAX_SUBJECT_BYTES * 4:  # bound the work before splitting
        raise _invalid(text, kind, "too_long")
    return text


def _keep_within_limits(filters: list[str], source: str, kind: str) -> list[str]:
    """Drop filters over the limits (they match no valid subject); fail if none is left."""
    kept = list(dict.fromkeys(f for f in filters if _within_limits(f)))
    if not kept:
        raise _invalid(source, kind, "too_long")
    return kept


def mqtt_topic_to_subject(topic: str) -> str:
    """The subject of an MQTT topic name: ``a/b/c`` → ``a.b.c``.

    Raises :class:`InvalidSubject` for wildcards, empty levels, levels holding
    ``.``, ``*`` or ``>``, and anything :func:`validate_subject` rejects.
    """
    kind = "MQTT topic"
    text = _check_foreign_text(topic, kind)
    levels = text.split(MQTT_LEVEL_SEPARATOR)
    for level in levels:
        if MQTT_SINGLE_WILDCARD in level or MQTT_MULTI_WILDCARD in level:
            raise _invalid(text, kind, "wildcard_in_subject")
        _check_foreign_token(level, text, kind)
    subject = TOKEN_SEPARATOR.join(levels)
    if not _within_limits(subject):
        raise _invalid(text, kind, "too_long")
    return subject


def _mqtt_level_to_token(level: str, source: str, kind: str) -> str:
    if level == MQTT_SINGLE_WILDCARD:
        return SINGLE_WILDCARD
    if level == MQTT_MULTI_WILDCARD:
        raise _invalid(source, kind, "multi_wildcard_not_last")
    if MQTT_SINGLE_WILDCARD in level or MQTT_MULTI_WILDCARD in level:
        raise _invalid(source, kind, "partial_wildcard")
    _check_foreign_token(level, source, kind)
    return level


def mqtt_filter_to_subject_filter(topic_filter: str) -> list[str]:
    """Subject filters matching exactly what the MQTT topic filter matches.

    ``a/+/c`` → ``[a.*.c]``; ``#`` → ``[>]``; ``a/#`` → ``[a, a.>]`` (MQTT's
    ``#`` includes the parent level). The filters never overlap each other.
    Raises :class:`InvalidSubject` for malformed or unmappable filters.
    """
    kind = "MQTT topic filter"
    text = _check_foreign_text(topic_filter, kind)
    levels = text.split(MQTT_LEVEL_SEPARATOR)
    multi = levels[-1] == MQTT_MULTI_WILDCARD
    prefix_levels = levels[:-1] if multi else levels
    tokens = [_mqtt_level_to_token(level, text, kind) for level in prefix_levels]
    prefix = TOKEN_SEPARATOR.join(tokens)
    if not multi:
        filters = [prefix]
    elif not tokens:
        filters = [FULL_WILDCARD]
    else:
        filters = [prefix, prefix + TOKEN_SEPARATOR + FULL_WILDCARD]
    return _keep_within_limits(filters, text, kind)


def _normalize_amqp_words(words: list[str]) -> list[str]:
    """Rewrite each run of wildcards as its stars then at most one '#'.

    ``#.#`` is ``#`` and ``#.*`` is ``*.#`` (both: one or more words), so after
    this a '#' is never next to another wildcard and expansion stays small.
    """
    normalized: list[str] = []
    stars = 0
    hashes = 0
    for word in [*words, None]:
        if word == AMQP_SINGLE_WILDCARD:
            stars += 1
        elif word == AMQP_MULTI_WILDCARD:
            hashes += 1
        else:
            normalized.extend([SINGLE_WILDCARD] * stars)
            normalized.extend([AMQP_MULTI_WILDCARD] * min(hashes, 1))
            stars = hashes = 0
            if word is not None:
                normalized.append(word)
    return normalized


def _expand_amqp_words(words: list[str], source: str, kind: str) -> list[str]:
    """Expand normalized words into subject filters, one per width of each inner '#'."""
    candidates: list[list[str]] = [[]]
    for index, word in enumerate(words):
        if word != AMQP_MULTI_WILDCARD:
            candidates = [[*candidate, word] for candidate in candidates]
        elif index == len(words) - 1:
            # Zero words (dropped when nothing precedes: no subject is empty) or '>'.
            zero = [candidate for candidate in candidates if candidate]
            candidates = zero + [[*candidate, FULL_WILDCARD] for candidate in candidates]
        else:
            after = sum(1 for rest in words[index + 1 :] if rest != AMQP_MULTI_WILDCARD)
            candidates = [
                [*candidate, *[SINGLE_WILDCARD] * width]
                for candidate in candidates
                for width in range(MAX_SUBJECT_TOKENS - len(candidate) - after + 1)
            ]
        if len(candidates) > MAX_MAPPED_FILTERS:
            raise _invalid(source, kind, "too_many_filters")
    return [TOKEN_SEPARATOR.join(candidate) for candidate in candidates]


def amqp_binding_to_subject_filter(binding_key: str) -> list[str]:
    """Subject filters matching exactly what the AMQP topic binding key matches.

    ``a.*`` → ``[a.*]``; ``#`` → ``[>]``; ``a.#`` → ``[a, a.>]``;
    ``#.error`` → ``[error, *.error, *.*.error, ...]`` up to the token limit.
    A word such as ``a#`` is literal, as in RabbitMQ. Raises
    :class:`InvalidSubject` for unmappable keys (empty words, the empty key,
    words holding ``*`` or ``>`` such as ``a*``) or one needing more than
    ``MAX_MAPPED_FILTERS`` filters.
    """
    kind = "AMQP binding key"
    text = _check_foreign_text(binding_key, kind)
    words = text.split(TOKEN_SEPARATOR)
    for word in words:
        # RabbitMQ reads 'a#' as a literal word, and '#' is legal in a subject token;
        # 'a*' is literal too but cannot be a token, so _check_foreign_token rejects it.
        if word not in (AMQP_SINGLE_WILDCARD, AMQP_MULTI_WILDCARD):
            _check_foreign_token(word, text, kind)
    filters = _expand_amqp_words(_normalize_amqp_words(words), text, kind)
    return _keep_within_limits(filters, text, kind)
