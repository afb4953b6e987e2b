"""Jinja2 rendering with StrictUndefined: a variable a recipe forgot is an error, never an empty string.

Values land as they are; a template that puts one into another language escapes it there:
`{{ name | tojson }}` in JSON, YAML or Python, `{{ path | quote }}` in shell text."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from vmlab.errors import BadInput


@lru_cache(maxsize=1)
def _env() -> Any:
    import shlex

    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    # `{{ path | quote }}` puts a value into shell text as one word (Jinja's own `tojson` is for JSON/Python)
    env.filters["quote"] = lambda value: shlex.quote(str(value))
    return env


@lru_cache(maxsize=1024)
def _compiled(text: str) -> Any:
    """The compiled template for `text`: a recipe's templates are rendered for every host (and checked before any
    host is contacted), and compiling is most of the cost."""
    return _env().from_string(text)


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text


def render(text: str, variables: Mapping[str, Any], where: str = "template") -> str:
    """Render `text` with `variables`; an undefined variable or a syntax error raises BadInput naming `where`."""
    if not is_template(text):
        return text
    import jinja2

    try:
        return str(_compiled(text).render(**variables))
    except jinja2.UndefinedError as exc:
        raise BadInput(f"{where}: {exc.message}",
                       "define it in the recipe's vars, the inventory, or with -e NAME=VALUE") from None
    except jinja2.TemplateSyntaxError as exc:
        raise BadInput(f"{where}: template syntax error on line {exc.lineno}: {exc.message}") from None


def evaluate(expression: str, variables: Mapping[str, Any], where: str) -> bool:
    """Truth of a Jinja expression such as `gpu and os_id == 'ubuntu'`."""
    import jinja2

    try:
        return bool(_env().compile_expression(expression, undefined_to_none=False)(**variables))
    except jinja2.UndefinedError as exc:
        raise BadInput(f"{where}: {exc.message}",
                       "define it in the recipe's vars, the inventory, or with -e NAME=VALUE") from None
    except jinja2.TemplateSyntaxError as exc:
        raise BadInput(f"{where}: bad condition {expression!r}: {exc.message}") from None
