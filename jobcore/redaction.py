"""Redaction of secrets in arguments, results, error messages, log lines and raw payloads.

The key rule (``docs/security.md``, "Secrets in outputs"): a key is secret when one of
its *words* is a secret word (``REDACT_KEYS``). Words are separated by ``_``, ``-``,
``.``, spaces, digits and camelCase boundaries (``dbPassword``, ``DBPassword``,
``X-Internal-Api-Key``); a configured key of several words (``api_key``,
``account_number``) matches those words in sequence, with or without a separator
(``api-key``, ``apiKey``, ``apikey``). A secret word also counts in its plural
(``tokens``). A secret word directly *quantified* names metadata, not a secret:
``max``/``min``/``num``/``total`` before it (``max_tokens``, ``maxTokens``), or a word
such as ``count``, ``length``, ``size``, ``limit``, ``type``, ``ttl``, ``expires`` after
it (``token_count``, ``session_ttl``). So ``passenger``, ``bypass``, ``author``,
``possession``, ``max_tokens`` and ``token_count`` are not secret; ``token``,
``access_token``, ``csrf_token``, ``tokens``, ``pwd`` and ``session_id`` are. Glued
lower-case compounds (``dbpassword``) are not split: configure them as keys if needed.

Free text is redacted by regular expressions whose cost is linear in the input: every
quantifier is bounded (a key tail to ``_MAX_KEY`` characters, a value to ``_MAX_VALUE``)
and none is nested, each pattern starts with a literal or one character class (so the
engine skips other positions in C), cheap fixed-width look-arounds reject a candidate
before the costlier checks run (the cheapest and most selective first), and a key's tail
is scanned possessively, so a failing candidate costs one bounded scan. The replacement uses
``re.split`` and list slicing, never a Python call per match.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

MASK = "[REDACTED]"

# A secret word directly quantified by one of these is metadata (max_tokens, token_count).
_QUALIFIERS_BEFORE = ("max", "min", "num", "total")
_QUALIFIERS_AFTER = ("count", "counts", "length", "len", "size", "limit", "max", "min", "total", "type",
                     "kind", "ttl", "expiry", "expires", "expiration", "age", "version")
_AUTH_SCHEMES = ("bearer", "basic", "digest", "negotiate", "ntlm", "token", "aws4-hmac-sha256")
_KEYCHAR = r"[A-Za-z0-9_.\-]"
_SEP = "\x00"  # stands for a word separator inside a key while the trie is built
# The longest key (after its secret word's first letter), and the longest value a match masks.
_MAX_KEY = 32
_MAX_VALUE = 4096


def _unit(ch: str) -> str:
    """One character of a secret word, case-insensitive as an explicit class (the engine
    skips a branch that starts with a class in one step, not with an inline flag)."""
    if ch == _SEP:
        return r"[_.\- ]"
    if ch.isalpha():
        return f"[{re.escape(ch.lower())}{re.escape(ch.upper())}]"
    return re.escape(ch)


def _variants(entry: str) -> list[str]:
    """Spellings of one configured key: its words joined by a separator or by nothing
    (``api_key`` -> ``api<sep>key``, ``apikey``)."""
    words = [w for w in re.split(r"[_\-.\s]+", entry.strip().lower()) if w]
    out = [words[0]] if words else []
    for word in words[1:]:
        out = [v + joiner + word for v in out for joiner in (_SEP, "")]
    return out


def _caseless(word: str) -> str:
    return "".join(_unit(c) for c in word)


def _word_guards(width: int) -> str:
    """Look-behinds at the end of a secret word of ``width`` characters that reject it when
    a whole qualifier word precedes it (``max_tokens``, ``MAX-TOKENS``, ``adminMaxTokens``).
    A look-behind needs a fixed width, so there is one per qualifier length; a cheap gate
    (is the character before the word, or before its separator, a qualifier's last
    letter?) skips them for almost every word."""
    by_len: dict[int, list[str]] = defaultdict(list)
    for q in _QUALIFIERS_BEFORE:
        by_len[len(q)].append(q)
    guards = []
    for qs in by_len.values():
        word = ("(?:(?<![A-Za-z])(?:" + "|".join(_caseless(q) for q in qs) + ")|(?<=[a-z])(?:"
                + "|".join(q[0].upper() + _caseless(q[1:]) for q in qs) + "))")
        guards.append(r"(?<!" + word + r"[_.\- ]" + "." * width + ")")
        guards.append(r"(?<!" + word + "." * width + ")")
    last = "".join(sorted({c for q in _QUALIFIERS_BEFORE for c in (q[-1], q[-1].upper())}))
    gate = f"(?<![{last}][_.\\- ]" + "." * width + f")(?<![{last}]" + "." * width + ")"
    return "(?:" + gate + "|" + "".join(guards) + ")"


def _trie_regex(node: dict[str, Any], leaf: Callable[[frozenset[str], int], str], depth: int) -> str:
    alternatives = [_unit(ch) + _trie_regex(child, leaf, depth + 1)
                    for ch, child in sorted(node.items(), key=lambda kv: kv[0] == "") if ch != ""]
    if "" in node:
        alternatives.append(leaf(node[""], depth))
    return alternatives[0] if len(alternatives) == 1 else "(?:" + "|".join(alternatives) + ")"


def _secret_word_regex(keys: Sequence[str], structural: str = "") -> str:
    """A regex that matches a secret word of a key (the rule of the module docstring),
    ending right after the word (plural and boundary included).

    Built for speed on hostile input: it starts with one character class (the engine
    skips every other position in C), then a two-character look-behind that rejects a
    position inside a word, then a trie of the words' remaining letters whose branches
    each start with a class; the first letter and the qualifier guards are checked by
    fixed-width look-behinds at the trie's leaves. ``structural`` (a look-ahead) is
    appended: in text it rejects at once a word whose key is not followed by a separator."""
    trie: dict[str, Any] = {}
    firsts: set[str] = set()
    seconds: set[str] = set()
    thirds: set[str] = set()
    for key in {k.strip().lower() for k in keys if k.strip()}:
        for variant in _variants(key):
            if not variant[0].isalnum() or len(variant) < 3:
                continue  # one- and two-letter keys would match nearly everything
            firsts.add(variant[0])
            seconds.update(_unit(variant[1])[1:-1] if variant[1].isalpha() else _unit(variant[1]))
            thirds.update(_unit(variant[2])[1:-1] if variant[2].isalpha() else _unit(variant[2]))
            node = trie
            for ch in variant[1:]:
                node = node.setdefault(ch, {})
            node[""] = node.get("", frozenset()) | {variant[0]}
    if not firsts:
        return r"(?!)"

    def leaf(first_letters: frozenset[str], depth: int) -> str:
        width = depth + 1
        letters = "".join(sorted(_unit(c)[1:-1] if c.isalpha() else re.escape(c) for c in first_letters))
        return "(?<=[" + letters + "]" + "." * (width - 1) + ")" + _word_guards(width)

    head = "[" + "".join(sorted(_unit(c)[1:-1] if c.isalpha() else re.escape(c) for c in firsts)) + "]"
    after_trie: dict[str, Any] = {}
    for q in _QUALIFIERS_AFTER:
        node = after_trie
        for ch in q:
            node = node.setdefault(ch, {})
        node[""] = frozenset()
    after = _trie_regex(after_trie, lambda _letters, _depth: "", 0)
    return (
        head
        # Start boundary: not inside a word ("bypass", "Xpass"), nor inside an upper-case
        # run unless this letter starts a camel word ("DBPassword").
        + r"(?<![A-Za-z][a-z])"
        # Cheap gate: could the next two characters continue a secret word at all?
        + "(?=[" + "".join(sorted(seconds)) + "][" + "".join(sorted(thirds)) + "])"
        + r"(?<![A-Z][A-Z](?![a-z]))"
        + structural
        + _trie_regex(trie, leaf, 0)
        + r"[sS]?"  # plural
        # End boundary: not followed by a letter, unless a camel word starts.
        + r"(?:(?![A-Za-z])|(?<=[a-z])(?=[A-Z]))"
        # Not quantified by a following whole word (token_count, sessionTtl).
        + r"(?![_.\- ]?" + after + r"(?![a-z]))"
    )


class Redactor:
    """Masks secrets. Thread-safe; one instance per process is enough."""

    def __init__(self, keys: Iterable[str]) -> None:
        self.keys = tuple(k.lower() for k in keys if k.strip())
        self._secrets: set[str] = set()
        self._lock = threading.Lock()
        self._key_cache: dict[str, bool] = {}
        self._word_re: re.Pattern[str] | None = None
        self._pair_re: re.Pattern[str] | None = None
        if self.keys:
            self._word_re = re.compile(_secret_word_regex(self.keys))
            # After the word: is the rest of the key token (at most _MAX_KEY characters)
            # followed by a separator? The token is scanned possessively (``{0,32}+``),
            # which never backtracks: a failing check costs one scan.
            separator = r"[\]\"']{0,2}[ \t]{0,8}[:=]"
            structural = ("(?=" + _KEYCHAR + "{0," + str(_MAX_KEY) + "}+"
                          + separator + r"[ \t]{0,8}(?!\[REDACTED\])[^\s,;&)}\]])")
            word = _secret_word_regex(self.keys, structural)
            schemes = "|".join(re.escape(s) for s in _AUTH_SCHEMES)
            self._pair_re = re.compile(
                r"(?P<head>" + word
                + _KEYCHAR + "{0," + str(_MAX_KEY) + "}"
                + separator + r"[ \t]{0,8}"
                r"(?!\[REDACTED\])"
                r"(?:(?P<dq>\")|(?P<sq>')|(?i:(?:" + schemes + r")[ \t]{1,8})(?=[^\s\"']))?"
                r")"
                # The value: inside quotes up to the closing quote (escapes honoured; an
                # unterminated quote masks to the end of the line), else up to a delimiter.
                r"(?(dq)(?:[^\"\\\n]|\\.){0," + str(_MAX_VALUE) + r"}"
                r"|(?(sq)(?:[^'\\\n]|\\.){0," + str(_MAX_VALUE) + r"}"
                r"|[^\s\"',;&)}\]]{1," + str(_MAX_VALUE) + r"}))"
                r"(?P<tail>(?(dq)\"?|(?(sq)'?)))"
            )
        # Userinfo of any URL: scheme://user:PASSWORD@host. Starts with a literal, so the
        # engine jumps between "://" occurrences; both parts stop at "/", so the scans of
        # two occurrences never overlap.
        self._url_re = re.compile(r"(?P<head>://[^\s/?#@:\"'<>]{0,256}:)(?!\[REDACTED\])[^\s/?#\"'<>]{1,256}(?=@)")
        # A bearer token outside any key (a pasted header, a curl command line), and
        # cookie headers, whose whole value is masked (they carry several name=value
        # pairs). Each pattern starts with a literal, so the engine finds candidates with
        # its fast substring search, and checks the word's first letter and boundary
        # behind it; one pattern per spelling keeps the prefix a plain literal.
        bearer = (r"(?<=(?<![A-Za-z])[Bb].....)[ \t]{1,8})(?!\[REDACTED\])[A-Za-z0-9\-._~+/]{8,"
                  + str(_MAX_VALUE) + r"}=*")
        cookie = (r"(?<=(?<![A-Za-z])[Cc].....)[ \t]{0,8}:[ \t]{0,8})(?!\[REDACTED\])[^\r\n]{1,"
                  + str(_MAX_VALUE) + r"}")
        self._literal_res = tuple(re.compile("(?P<head>" + literal + rest)
                                  for literal, rest in (("ookie", cookie), ("OOKIE", cookie),
                                                        ("earer", bearer), ("EARER", bearer)))

    def is_secret_key(self, key: object) -> bool:
        """True when ``key`` names a secret by the word rule of the module docstring."""
        if not isinstance(key, str) or self._word_re is None:
            return False
        hit = self._key_cache.get(key)
        if hit is None:
            hit = self._word_re.search(key) is not None
            if len(self._key_cache) < 10_000:  # keys come from code: a small, stable set
                self._key_cache[key] = hit
        return hit

    def add_secret(self, value: str) -> None:
        """Register a literal secret (e.g. a mailbox password loaded at run time) so it is
        masked wherever it appears in text."""
        if value and len(value) >= 4:
            with self._lock:
                self._secrets.add(value)

    def value(self, value: Any) -> Any:
        """Redact a JSON-like value recursively (mappings by key, strings and bytes as text)."""
        if isinstance(value, dict):
            return {k: (MASK if self.is_secret_key(k) else self.value(v)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, (bytes, bytearray, memoryview)):
            # surrogateescape keeps undecodable bytes byte-for-byte through the round trip.
            raw = bytes(value)
            redacted = self.text(raw.decode("utf-8", "surrogateescape"))
            return redacted.encode("utf-8", "surrogateescape")
        return value

    def arguments(self, fn: Callable[..., Any] | None, args: Iterable[Any], kwargs: dict[str, Any]
                  ) -> tuple[list[Any], dict[str, Any]]:
        """Redact an actor's arguments; positional ones by their parameter names."""
        args = list(args)
        names = _positional_names(fn) if fn is not None and args else ()
        return self.positional(args, names), self.value(kwargs)

    def positional(self, args: Sequence[Any], names: Sequence[str] | None) -> list[Any]:
        """Redact positional arguments: by parameter name when ``names`` is known, every
        one masked when it is not (``None``): a positional secret has no key to recognise."""
        if names is None:
            return [MASK for _ in args]
        return [MASK if i < len(names) and self.is_secret_key(names[i]) else self.value(a)
                for i, a in enumerate(args)]

    def payload(self, raw: bytes | str, positional_names: Sequence[str] | None = None) -> str:
        """Redact a raw dramatiq message payload (a rejected or unknown-actor message).

        JSON objects are redacted field by field: ``args`` by ``positional_names`` (all
        masked when the actor is unknown, ``None``), ``kwargs`` by key, ``options`` and
        every other field recursively. Anything that is not a JSON object (not JSON, not
        UTF-8, another JSON type) is redacted as text."""
        if isinstance(raw, (bytes, bytearray, memoryview)):
            try:
                text = bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                return self.text(bytes(raw).decode("utf-8", "replace"))
        else:
            text = raw
        try:
            return self._structured_payload(json.loads(text), positional_names)
        except (ValueError, RecursionError):
            # Not JSON, or nested deeper than the recursive redaction can follow.
            return self.text(_mask_raw_args(text))

    def _structured_payload(self, data: Any, positional_names: Sequence[str] | None) -> str:
        if not isinstance(data, dict):
            return json.dumps(self.value(data), ensure_ascii=False)
        out: dict[str, Any] = {}
        for key, item in data.items():
            if key == "args":
                # Not a list: its structure is unknown, so nothing in it can be trusted.
                out[key] = self.positional(item, positional_names) if isinstance(item, list) else MASK
            elif key == "kwargs" and not isinstance(item, dict):
                out[key] = MASK  # keyword arguments without their keys: as unknowable
            elif self.is_secret_key(key):
                out[key] = MASK
            else:
                out[key] = self.value(item)
        return json.dumps(out, ensure_ascii=False, default=str)

    def text(self, text: str) -> str:
        """Redact free text: secret ``key=value`` pairs, URL passwords, bearer tokens,
        cookie headers and registered secrets. Linear in ``len(text)``."""
        if not text:
            return text
        # Each pass runs only when its anchor can occur (substring tests are C-fast).
        for pattern in self._literal_res[:2]:  # cookies first: the pair pass would mask one pair only
            text = _mask_split(pattern, text)
        if self._pair_re is not None and ("=" in text or ":" in text):
            text = _mask_split(self._pair_re, text)
        for pattern in self._literal_res[2:]:
            text = _mask_split(pattern, text)
        if "://" in text:
            text = _mask_split(self._url_re, text)
        if self._secrets:
            with self._lock:
                secrets = sorted(self._secrets, key=len, reverse=True)
            for secret in secrets:
                if secret in text:
                    text = text.replace(secret, MASK)
        return text


def _mask_raw_args(text: str) -> str:
    """In a payload that does not parse (truncated, say), mask everything from ``"args"`` to
    the next field dramatiq writes after it: positional arguments have no keys to go by."""
    start = text.find('"args"')
    if start < 0:
        return text
    ends = [i for i in (text.find(f'"{f}"', start + 6) for f in ("kwargs", "options", "message_id")) if i > 0]
    if not ends:
        return text[:start] + '"args": "' + MASK + '"'
    return text[:start] + '"args": "' + MASK + '", ' + text[min(ends):]


def _mask_split(pattern: re.Pattern[str], text: str) -> str:
    """Replace every match by its ``head`` group (group 1), the mask and its ``tail``
    group if it has one. ``re.split`` does the matching in C and list slices the rest, so
    dense matches cost no Python call each."""
    parts: list[Any] = pattern.split(text)
    if len(parts) == 1:
        return text
    stride = pattern.groups + 1
    n = (len(parts) - 1) // stride
    tail = pattern.groupindex.get("tail")
    parts[1::stride] = [h + MASK for h in parts[1::stride]]
    for g in range(2, stride):
        if g == tail:
            parts[g::stride] = [t or "" for t in parts[g::stride]]
        else:
            parts[g::stride] = [""] * n
    return "".join(parts)


@functools.lru_cache(maxsize=1024)
def _positional_names(fn: Callable[..., Any]) -> tuple[str, ...]:
    try:
        return tuple(p.name for p in inspect.signature(fn).parameters.values()
                     if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    except (TypeError, ValueError):
        return ()


_default: Redactor | None = None
_default_lock = threading.Lock()


def get_redactor() -> Redactor:
    """The process-wide redactor built from ``REDACT_KEYS``."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                from jobcore.settings import get_settings

                _default = Redactor(get_settings().redact_keys)
    return _default
