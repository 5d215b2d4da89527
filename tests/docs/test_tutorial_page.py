"""The tutorial (docs/tutorial.md) as a portal page: every step shown, linked from the navigation,
raw HTML in Markdown shown as text, signed-in users only, nothing outside docs/ served."""

from __future__ import annotations

import html
import re

from django.conf import settings
from django.test import Client

from trainhub.docs.pages import render_markdown

TUTORIAL = settings.BASE_DIR / "docs" / "tutorial.md"


def test_the_page_shows_every_step_of_the_tutorial(client_for, owner):
    response = client_for(owner).get("/docs/tutorial/")
    assert response.status_code == 200
    page = response.content.decode()
    steps = [line[3:].strip() for line in TUTORIAL.read_text().splitlines() if line.startswith("## ")]
    shown = [html.unescape(h) for h in re.findall(r"<h2>(.*?)</h2>", page)]
    assert shown == steps and len(steps) >= 9
    assert "<title>Tutorial: train a PyTorch model with TrainHub, end to end · TrainHub</title>" in page
    assert "run.wait_for_completion(show_output=True)" in html.unescape(page)


def test_the_navigation_links_to_it(client_for, owner):
    page = client_for(owner).get("/", follow=True).content.decode()
    assert '<a href="/docs/tutorial/">Tutorial</a>' in page


def test_raw_html_and_script_links_in_markdown_stay_inert():
    rendered = render_markdown(
        '<script>alert(1)</script>\n\n<img src=x onerror="alert(2)">\n\n[x](javascript:alert(3))'
    )
    assert "<script" not in rendered and "<img" not in rendered and "<a " not in rendered
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered


def test_anonymous_users_are_sent_to_sign_in(db):
    response = Client().get("/docs/tutorial/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_only_pages_of_docs_are_served(client_for, owner):
    client = client_for(owner)
    for name in ("nope", "README", "..%2FREADME", "%2e%2e", "tutorial.md", "Tutorial"):
        assert client.get(f"/docs/{name}/").status_code == 404, name
