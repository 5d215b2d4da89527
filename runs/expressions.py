"""SQL expressions on runs that an index can hold: the same text in the index and in the query."""

from __future__ import annotations

from typing import Any

from django.db.models import F, FloatField, Func


class SecondsBetween(Func):
    """The seconds from `start` to `end` (NULL while either is). Built-in SQL on both databases, so
    an index can hold it, where Django's datetime subtraction calls a Python function on SQLite."""

    output_field = FloatField()

    def __init__(self, end: str, start: str) -> None:
        super().__init__(F(end), F(start))

    def as_sqlite(self, compiler: Any, connection: Any, **extra_context: Any) -> Any:
        template = "((julianday(%(expressions)s)) * 86400.0)"
        return self.as_sql(compiler, connection, template=template, arg_joiner=") - julianday(")

    def as_postgresql(self, compiler: Any, connection: Any, **extra_context: Any) -> Any:
        return self.as_sql(compiler, connection, template="EXTRACT(EPOCH FROM (%(expressions)s))", arg_joiner=" - ")
