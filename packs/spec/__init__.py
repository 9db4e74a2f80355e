"""Configuration as code: Fleet's YAML specs (``apiVersion: v1``) planned, applied and exported.

``parse_yaml`` / ``from_objects`` read documents, ``apply_documents`` plans them (and applies them
unless it is a dry run) in one transaction, and ``packs.spec.export`` writes the same YAML back.
Used by ``manage.py apply``, ``manage.py export``, ``manage.py import_pack`` and
``POST /api/v1/spec/``.
"""

from packs.spec.documents import Document, SpecSyntaxError, from_objects, parse_yaml
from packs.spec.engine import SpecError, apply_documents
from packs.spec.plan import Change, Plan, Skipped

__all__ = [
    "Change",
    "Document",
    "Plan",
    "Skipped",
    "SpecError",
    "SpecSyntaxError",
    "apply_documents",
    "from_objects",
    "parse_yaml",
]
