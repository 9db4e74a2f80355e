"""The read-only TUF repository at /tuf/ (``updates.views``; docs/agent-updates.md)."""

from django.urls import path

from updates import views

urlpatterns = [
    path("<path:path>", views.tuf_file, name="tuf-file"),
]
