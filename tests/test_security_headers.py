"""Every page carries the Content-Security-Policy and the other protective headers, and no
template relies on what that policy forbids (inline scripts and event handlers, other origins).

Checked in a real browser too (live query over the WebSocket, the API docs): no violations.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.django_db


def policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {d.split()[0]: d.split()[1:] for d in (part.strip() for part in header.split(";")) if d}


@pytest.mark.parametrize("path", ["/admin/login/", "/admin/", "/api/v1/docs/", "/healthz"])
def test_pages_carry_a_strict_policy(client, admin_client, path):
    response = (client if path == "/admin/login/" else admin_client).get(path)
    assert response.status_code == 200
    directives = policy(response)
    assert directives["script-src"] == ["'self'"]
    assert directives["default-src"] == ["'self'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["object-src"] == ["'none'"]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"


def test_the_api_docs_load_nothing_from_other_origins(admin_client):
    page = admin_client.get("/api/v1/docs/").content.decode()
    assert "cdn." not in page and "https://" not in page.replace("https://swagger.io", "")
    assert "<script>" not in page  # the split view serves its script from a URL of ours


INLINE_HANDLER = re.compile(r"\son[a-z]+\s*=", re.IGNORECASE)
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)


@pytest.mark.parametrize("template", sorted((ROOT / "templates").rglob("*.html")), ids=lambda p: p.name)
def test_templates_have_no_inline_scripts_or_handlers(template):
    text = template.read_text()
    assert not INLINE_HANDLER.search(text), "inline event handler: move it to a static script"
    assert not INLINE_SCRIPT.search(text), "inline <script>: move it to a static file"


def test_production_cookies_are_secure_by_default(settings):
    from fleet import settings as production

    assert production.EMBEDDED or (production.SESSION_COOKIE_SECURE and production.CSRF_COOKIE_SECURE)
    assert settings.SESSION_COOKIE_HTTPONLY
    assert "*" not in settings.ALLOWED_HOSTS
