"""Finding a page of docs/ by its name and rendering its Markdown safely (raw HTML is escaped)."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.http import Http404
from markdown_it import MarkdownIt

PAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")

# html=False: any HTML in a page is shown as text, never passed through; markdown-it also refuses
# javascript:, vbscript: and data: links (other than images) on its own.
_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")


def docs_dir() -> Path:
    return Path(settings.BASE_DIR) / "docs"


def page_path(name: str) -> Path:
    """docs/<name>.md, for a plain name whose file exists inside docs/ (404 otherwise)."""
    if not PAGE_NAME.match(name):
        raise Http404("No such page.")
    root = docs_dir().resolve()
    path = (root / f"{name}.md").resolve()
    if path.parent != root or not path.is_file():
        raise Http404("No such page.")
    return path


def render_markdown(text: str) -> str:
    return _MARKDOWN.render(text)


def page_title(text: str) -> str:
    """The first level-one heading, else nothing."""
    heading = next((line for line in text.splitlines() if line.startswith("# ")), "")
    return heading[2:].strip()


@lru_cache(maxsize=16)
def _rendered(path: Path, mtime_ns: int) -> tuple[str, str]:
    text = path.read_text(encoding="utf-8")
    return page_title(text), render_markdown(text)


def rendered_page(name: str) -> tuple[str, str]:
    """(title, HTML) of a page; rendered again only when its file changed."""
    path = page_path(name)
    return _rendered(path, path.stat().st_mtime_ns)
