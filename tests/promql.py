"""Just enough PromQL handling for the tests: metric names, and an alert rule's "underlying"
expressions.

An alerting rule's expression is usually a "bad news" condition (``x > 0.05``,
``absent(up == 1)``) that is empty while all is well. To check that a rule looks at series
that exist, :func:`operands` splits the expression at its top-level comparisons and set
operators (``and``, ``or``, ``unless``), unwraps ``absent()`` and outer parentheses, and
drops number literals: what is left must each return data from a healthy system.

>>> operands('(sum by (t) (lag{a="x"}) > 1000) and (sum by (t) (delta(lag[10m])) > 0)')
['sum by (t) (lag{a="x"})', 'sum by (t) (delta(lag[10m]))']
>>> operands('absent(up{job="s"} == 1)')
['up{job="s"}']
>>> operands('a / b > 0.05')
['a / b']
>>> operands('increase(x{s="c"}[15m]) > 0 or time() - y{s="c"} < 900')
['increase(x{s="c"}[15m])', 'time() - y{s="c"}']
>>> sorted(metric_names('histogram_quantile(0.9, sum by (le) (rate(a_bucket{x="y"}[5m])))'))
['a_bucket']
>>> sorted(metric_names('(x unless x offset $__range) or increase(y[$__range]) or vector(0)'))
['x', 'y']
"""

from __future__ import annotations

import re

_KEYWORDS = ("and", "or", "unless")
_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_FUNCTION_OR_KEYWORD = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "group", "count_values", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "rate", "irate", "increase", "delta", "idelta",
    "deriv", "changes", "resets", "absent", "absent_over_time", "histogram_quantile",
    "label_replace", "label_join", "vector", "scalar", "time", "timestamp", "abs", "ceil",
    "floor", "round", "clamp", "clamp_min", "clamp_max", "sort", "sort_desc", "predict_linear",
    "avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time",
    "last_over_time", "quantile_over_time", "stddev_over_time", "present_over_time", "le",
    "inf", "nan",
}


def _top_level_splits(expr: str) -> list[tuple[int, int]]:
    """(start, end) of each top-level comparison or set operator in ``expr``."""
    out: list[tuple[int, int]] = []
    depth = 0
    i = 0
    quote = ""
    while i < len(expr):
        c = expr[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = ""
            i += 1
            continue
        if c in "\"'`":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0:
            for op in _COMPARISONS:
                if expr.startswith(op, i):
                    end = i + len(op)
                    rest = expr[end:].lstrip()
                    if rest.startswith("bool "):
                        end = len(expr) - len(rest) + 4
                    out.append((i, end))
                    i = end
                    break
            else:
                m = re.match(r"(and|or|unless)\b", expr[i:])
                if m and (i == 0 or not (expr[i - 1].isalnum() or expr[i - 1] == "_")):
                    out.append((i, i + len(m.group(1))))
                    i += len(m.group(1))
                    continue
                i += 1
                continue
            continue
        i += 1
    return out


def _strip_parens(expr: str) -> str:
    expr = expr.strip()
    while expr.startswith("(") and expr.endswith(")"):
        depth = 0
        for i, c in enumerate(expr):
            depth += c == "("
            depth -= c == ")"
            if depth == 0 and i < len(expr) - 1:
                return expr  # "(a) + (b)": the first "(" closes early
        expr = expr[1:-1].strip()
    return expr


def operands(expr: str) -> list[str]:
    """The non-literal operands of ``expr``'s top-level comparisons and set operators."""
    expr = _strip_parens(expr)
    splits = _top_level_splits(expr)
    if not splits:
        m = re.fullmatch(r"absent\s*\((.*)\)", expr, re.S)
        if m:
            return operands(m.group(1))
        expr = " ".join(expr.split())
        return [] if _NUMBER.match(expr) else [expr]
    parts, start = [], 0
    for a, b in splits:
        parts.append(expr[start:a])
        start = b
    parts.append(expr[start:])
    return [leaf for part in parts for leaf in operands(part)]


def metric_names(expr: str) -> set[str]:
    """Names of the series ``expr`` selects (identifiers that are not functions or keywords,
    label names, durations or strings)."""
    text = re.sub(r'"(\\.|[^"\\])*"', '""', expr)          # strings
    text = re.sub(r"\{[^}]*\}", "{}", text)                 # label matchers
    text = re.sub(r"\[[^\]]*\]", "[]", text)                # range selectors
    text = re.sub(r"\$\{?\w+\}?", " ", text)                  # Grafana variables
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)", text):
        name = m.group(1)
        after = text[m.end():].lstrip()
        if name in _FUNCTION_OR_KEYWORD or after.startswith("("):
            continue
        if re.fullmatch(r"\d+[smhdwy]", name):
            continue
        names.add(name)
    return names


def registry_series() -> set[str]:
    """Every series name that :class:`stream.metrics.Metrics` can expose (counters as
    ``_total`` and ``_created``, histograms as ``_bucket``, ``_count``, ``_sum``)."""
    from stream.metrics import Metrics

    suffixes = {"counter": ("_total", "_created"), "gauge": ("",),
                "histogram": ("_bucket", "_count", "_sum", "_created"),
                "summary": ("", "_count", "_sum", "_created")}
    return {f.name + s for f in Metrics().registry.collect() for s in suffixes[f.type]}


# Series that Prometheus itself adds to every scrape target.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
