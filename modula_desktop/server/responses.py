"""Small helpers for JSON answers."""
from __future__ import annotations

import json

import falcon

from .errors import JSON


def send_json(resp: falcon.Response, value, status: int = 200):
    resp.status = status
    resp.content_type = JSON
    resp.data = json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
