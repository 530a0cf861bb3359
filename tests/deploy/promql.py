"""Finds the metric names and label names a PromQL expression refers to.

Not a PromQL parser: enough of the grammar (selectors `name{matchers}`, range `[...]`,
`by/without/on/ignoring/group_*(labels)`, function calls, strings, keywords, Grafana's
`$variables` and `label_values(metric, label)`) to list every series name an expression reads
and every label it matches or groups on, for the expressions this chart writes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

_IDENT = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SELECTOR = re.compile(rf"(?<![\w:$.])({_IDENT})\s*\{{([^}}]*)\}}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*\"")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_LABEL_VALUES = re.compile(rf"label_values\(\s*({_IDENT})\s*(\{{[^}}]*\}})?\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_RANGE = re.compile(r"\[[^\]]*\]")
_BRACES = re.compile(r"\{[^}]*\}")
_BARE = re.compile(rf"(?<![\w:$.])({_IDENT})(?![\w:])(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
             "group_left", "group_right", "inf", "nan", "Inf", "NaN", "atan2"}


@dataclass
class Refs:
    metrics: set[str] = field(default_factory=set)
    # (metric, label) pairs from selectors; grouping labels apply to the whole expression.
    matched: set[tuple[str, str]] = field(default_factory=set)
    grouped: set[str] = field(default_factory=set)

    def update(self, other: Refs) -> None:
        self.metrics |= other.metrics
        self.matched |= other.matched
        self.grouped |= other.grouped


def refs(expr: str) -> Refs:
    """Metric names and label names used by one expression."""
    out = Refs()
    for m in _LABEL_VALUES.finditer(expr):
        out.metrics.add(m.group(1))
        out.matched.add((m.group(1), m.group(3)))
        out.matched |= {(m.group(1), name) for name, _op in _MATCHER.findall(m.group(2) or "")}
    expr = _LABEL_VALUES.sub(" ", expr)
    for m in _SELECTOR.finditer(expr):
        out.metrics.add(m.group(1))
        out.matched |= {(m.group(1), name) for name, _op in _MATCHER.findall(m.group(2))}
    for m in _GROUPING.finditer(expr):
        out.grouped |= {lab.strip() for lab in m.group(2).split(",") if lab.strip()}
    bare = _GROUPING.sub(" ", _BRACES.sub(" ", _RANGE.sub(" ", _STRING.sub('""', expr))))
    out.metrics |= {name for name in _BARE.findall(bare) if name not in _KEYWORDS}
    return out
