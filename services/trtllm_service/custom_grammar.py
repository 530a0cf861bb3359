"""Grammars of custom tools, as constraints on the JSON string that carries their input.

A custom tool (proto ``Tool.custom``) is called like a function whose arguments are
``{"input": "<text>"}``; its ``CustomToolFormat`` (syntax ``lark`` or ``regex``) says what
the *decoded* text must match. The model writes the text JSON-escaped inside a JSON string,
so the constraint is the grammar's language under JSON string escaping:
:func:`arguments_grammar` compiles the definition with xgrammar (``Grammar.from_lark`` /
``from_regex``), then rewrites every string literal and character class of the printed
EBNF so that each character ``c`` is matched as ``json.dumps`` writes it (``"`` -> ``\\"``,
``\\`` -> ``\\\\``, ``\\n`` ``\\r`` ``\\t`` ``\\b`` ``\\f`` as themselves, other control
characters as ``\\u00XX``; everything else raw), and wraps it as ``{"input": "…"}``. Whatever
the model writes under that grammar decodes (``json.loads``) to a string of the original
grammar's language.

An invalid definition raises :class:`CustomGrammarError` with xgrammar's message (no C++
locations), which the planner turns into INVALID_ARGUMENT naming the definition's request
path. Compiled grammars are cached by (syntax, definition).
"""
from __future__ import annotations

import json
import re
from functools import lru_cache

from .guided import grammar_error

INPUT_KEY = "input"
#: Characters a JSON string cannot hold raw: what each one is written as.
_ESCAPES = {**{c: f"\\u{c:04x}" for c in range(0x20)}, 0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f",
            0x0D: "\\r", 0x22: '\\"', 0x5C: "\\\\"}
_SPECIALS = sorted(_ESCAPES)
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|\[(?:[^\]\\]|\\.)*\]')
_EBNF_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "f": "\f", "v": "\v", "a": "\a", "b": "\b", "0": "\0",
                 "e": "\x1b"}


class CustomGrammarError(ValueError):
    """The definition is not a grammar xgrammar can compile (or uses an unsupported construct)."""


@lru_cache(maxsize=128)
def arguments_grammar(syntax: str, definition: str) -> str:
    """EBNF (root ``root``) of the arguments ``{"input": "<text>"}`` whose decoded text
    matches ``definition`` (``syntax`` ``lark`` or ``regex``)."""
    if syntax not in ("lark", "regex"):
        raise CustomGrammarError(f"unknown grammar syntax {syntax!r}; expected lark or regex")
    xgr = _xgrammar()
    try:
        grammar = xgr.Grammar.from_lark(definition) if syntax == "lark" else xgr.Grammar.from_regex(definition)
    except Exception as exc:  # noqa: BLE001 - xgrammar raises RuntimeError (and subclasses) for bad grammars
        raise CustomGrammarError(f"invalid {syntax} grammar: {grammar_error(exc)}") from None
    printed = str(grammar)
    if "TagDispatch" in printed:
        raise CustomGrammarError("structural tool-call patterns are not supported in custom tool grammars")
    escaped = xgr.Grammar.from_ebnf(json_string_ebnf(printed))
    prefix = xgr.Grammar.from_ebnf(f"root ::= {_literal('{' + json.dumps(INPUT_KEY) + ': ' + chr(34))}")
    suffix = xgr.Grammar.from_ebnf(f"root ::= {_literal(chr(34) + '}')}")
    return str(xgr.Grammar.concat(prefix, escaped, suffix))


def json_string_ebnf(ebnf: str) -> str:
    """``ebnf`` with every literal and character class matching its characters JSON-escaped."""
    return _TOKENS.sub(lambda m: _escaped_literal(m.group()) if m.group()[0] == '"' else _escaped_class(m.group()),
                       ebnf)


def _chars(body: str) -> list[int]:
    """Code points of an EBNF literal's or class's body (escapes decoded)."""
    out, i = [], 0
    while i < len(body):
        char = body[i]
        if char != "\\":
            out.append(ord(char))
            i += 1
            continue
        kind = body[i + 1]
        width = {"x": 2, "u": 4, "U": 8}.get(kind)
        if width is not None:
            out.append(int(body[i + 2:i + 2 + width], 16))
            i += 2 + width
        else:
            out.append(ord(_EBNF_ESCAPES.get(kind, kind)))
            i += 2
    return out


def _escape_char(code: int, specials: str) -> str:
    """One code point as EBNF source (``specials``: characters that need a backslash)."""
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    char = chr(code)
    return "\\" + char if char in specials else char


def _literal(text: str) -> str:
    return '"' + "".join(_escape_char(ord(c), '"\\') for c in text) + '"'


def _escaped_literal(token: str) -> str:
    return _literal("".join(_ESCAPES.get(c, chr(c)) for c in _chars(token[1:-1])))


def _ranges(body: str) -> list[tuple[int, int]]:
    codes, ranges, i = _chars(body), [], 0
    # `_chars` has decoded escapes, so a range's '-' is a raw '-' between two codes; find them
    # in the source instead: a '-' that is neither first, last, nor escaped joins its neighbours.
    raw = re.findall(r"\\(?:x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)|.", body, re.S)
    assert len(raw) == len(codes)
    while i < len(codes):
        if i + 2 < len(codes) and raw[i + 1] == "-":
            ranges.append((codes[i], codes[i + 2]))
            i += 3
        else:
            ranges.append((codes[i], codes[i]))
            i += 1
    return ranges


def _without_specials(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for lo, hi in ranges:
        for special in _SPECIALS:
            if lo <= special <= hi:
                if lo < special:
                    out.append((lo, special - 1))
                lo = special + 1
        if lo <= hi:
            out.append((lo, hi))
    return out


def _class(ranges: list[tuple[int, int]], negated: bool) -> str:
    def one(code: int) -> str:
        return _escape_char(code, "]\\^-")
    body = "".join(one(lo) if lo == hi else f"{one(lo)}-{one(hi)}" for lo, hi in ranges)
    return f"[{'^' if negated else ''}{body}]"


def _escaped_class(token: str) -> str:
    negated = token.startswith("[^")
    ranges = _ranges(token[2 if negated else 1:-1])
    inside = [c for c in _SPECIALS if any(lo <= c <= hi for lo, hi in ranges) != negated]
    if negated:
        plain = _class(ranges + [(c, c) for c in _SPECIALS], True)
    else:
        kept = _without_specials(ranges)
        plain = _class(kept, False) if kept else ""
    alternatives = ([plain] if plain else []) + [_literal(_ESCAPES[c]) for c in inside]
    return "(" + " | ".join(alternatives) + ")"


def _xgrammar():
    try:
        import xgrammar
    except ImportError:
        raise CustomGrammarError("custom tool grammars need the xgrammar package, which is not installed") from None
    return xgrammar
