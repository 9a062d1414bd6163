"""A tiny evaluator for the subset of CEL that `x-kubernetes-validations` rules use here.

Supported: `self`, field selection (`self.a.b`), `has(self.a)`, `size(x)` and `x.size()`,
`x.matches(re)` (RE2 search; the patterns used here mean the same in Python's re),
string / int / float / bool / null literals, `== != < <= > >=`, `! && ||` and parentheses.
Anything else fails to compile; the caller skips such a rule rather than guess.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Evaluator = Callable[[Any], Any]


class CelSyntaxError(ValueError):
    """The rule uses CEL outside the supported subset."""


class CelEvalError(ValueError):
    """Evaluation failed (e.g. a missing field without has()); the rule counts as failed."""


_TOKEN_RE = re.compile(
    r"""\s*(?:
        (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<num>\d+\.\d+|\d+)
      | (?P<op>&&|\|\||==|!=|<=|>=|[<>!().,])
      | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: bool(a == b),
    "!=": lambda a, b: bool(a != b),
    "<": lambda a, b: bool(a < b),
    "<=": lambda a, b: bool(a <= b),
    ">": lambda a, b: bool(a > b),
    ">=": lambda a, b: bool(a >= b),
}


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m or m.end() == pos:
            raise CelSyntaxError(f"unsupported syntax at {text[pos:]!r}")
        kind = m.lastgroup
        assert kind is not None
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    return tokens


def _select(base: Evaluator, name: str) -> Evaluator:
    def select(self: Any) -> Any:
        obj = base(self)
        if not isinstance(obj, dict) or name not in obj:
            raise CelEvalError(f"no such key: {name}")
        return obj[name]

    return select


def _size(arg: Evaluator) -> Evaluator:
    def size(self: Any) -> int:
        value = arg(self)
        if not isinstance(value, str | list | dict):
            raise CelEvalError(f"size() of unsupported value {value!r}")
        return len(value)

    return size


def _matches(base: Evaluator, pattern: Evaluator) -> Evaluator:
    def matches(self: Any) -> bool:
        value, regex = base(self), pattern(self)
        if not isinstance(value, str) or not isinstance(regex, str):
            raise CelEvalError(f"matches() of unsupported values {value!r}, {regex!r}")
        return re.search(regex, value) is not None

    return matches


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise CelEvalError(f"expected a bool, got {value!r}")
    return value


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> tuple[str, str]:
        if self.pos >= len(self.tokens):
            raise CelSyntaxError("unexpected end of rule")
        token = self.tokens[self.pos]
        if expected is not None and token[1] != expected:
            raise CelSyntaxError(f"expected {expected!r}, got {token[1]!r}")
        self.pos += 1
        return token

    def parse(self) -> Evaluator:
        result = self.or_()
        if self.pos != len(self.tokens):
            raise CelSyntaxError(f"unexpected {self.tokens[self.pos][1]!r}")
        return result

    def or_(self) -> Evaluator:
        left = self.and_()
        while self.peek() == "||":
            self.take()
            right = self.and_()
            left = (lambda a, b: lambda s: _bool(a(s)) or _bool(b(s)))(left, right)
        return left

    def and_(self) -> Evaluator:
        left = self.compare()
        while self.peek() == "&&":
            self.take()
            right = self.compare()
            left = (lambda a, b: lambda s: _bool(a(s)) and _bool(b(s)))(left, right)
        return left

    def compare(self) -> Evaluator:
        left = self.unary()
        op = self.peek()
        if op in _COMPARE:
            self.take()
            right = self.unary()
            fn = _COMPARE[op]

            def compared(s: Any) -> bool:
                try:
                    return fn(left(s), right(s))
                except TypeError as e:
                    raise CelEvalError(str(e)) from e

            return compared
        return left

    def unary(self) -> Evaluator:
        if self.peek() == "!":
            self.take()
            inner = self.unary()
            return lambda s: not _bool(inner(s))
        return self.postfix(self.primary())

    def postfix(self, base: Evaluator) -> Evaluator:
        while self.peek() == ".":
            self.take()
            kind, name = self.take()
            if kind != "ident":
                raise CelSyntaxError(f"expected a field name, got {name!r}")
            if name == "size" and self.peek() == "(":
                self.take("(")
                self.take(")")
                base = _size(base)
            elif name == "matches" and self.peek() == "(":
                self.take("(")
                pattern = self.or_()
                self.take(")")
                base = _matches(base, pattern)
            else:
                base = _select(base, name)
        return base

    def primary(self) -> Evaluator:
        kind, text = self.take()
        if text == "(":
            inner = self.or_()
            self.take(")")
            return inner
        if kind == "str":
            value = text[1:-1].encode().decode("unicode_escape")
            return lambda s: value
        if kind == "num":
            number = float(text) if "." in text else int(text)
            return lambda s: number
        if kind != "ident":
            raise CelSyntaxError(f"unexpected {text!r}")
        if text in ("true", "false", "null"):
            constant = {"true": True, "false": False, "null": None}[text]
            return lambda s: constant
        if text == "self":
            return lambda s: s
        if text == "has":
            return self.has()
        if text == "size":
            self.take("(")
            arg = self.or_()
            self.take(")")
            return _size(arg)
        raise CelSyntaxError(f"unsupported identifier {text!r}")

    def has(self) -> Evaluator:
        """`has(x.f)`: is field `f` present on `x`; only a field selection is allowed inside."""
        self.take("(")
        if self.take()[1] != "self":
            raise CelSyntaxError("has() needs a field selection on self")
        base: Evaluator = lambda s: s  # noqa: E731
        names: list[str] = []
        while self.peek() == ".":
            self.take()
            kind, name = self.take()
            if kind != "ident":
                raise CelSyntaxError(f"expected a field name, got {name!r}")
            names.append(name)
        self.take(")")
        if not names:
            raise CelSyntaxError("has() needs a field selection")
        for name in names[:-1]:
            base = _select(base, name)
        last = names[-1]

        def has(s: Any) -> bool:
            obj = base(s)
            if not isinstance(obj, dict):
                raise CelEvalError(f"has() on a non-object value {obj!r}")
            return last in obj

        return has


def compile_rule(text: str) -> Callable[[Any], bool]:
    """Compile a rule to a predicate over `self`; raises CelSyntaxError outside the subset."""
    evaluator = _Parser(text).parse()
    return lambda value: _bool(evaluator(value))
