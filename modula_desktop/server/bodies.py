"""Reading request bodies with a cap: the declared length is checked before reading, and the read
itself never takes more than the limit plus one byte."""
from __future__ import annotations

import json

import falcon

JSON_TYPES = ("application/json",)


def media_type(req: falcon.Request) -> str:
    return media_type_of(req.content_type)


def media_type_of(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_json(req: falcon.Request) -> bool:
    return is_json_type(req.content_type)


def is_json_type(content_type: str | None) -> bool:
    mt = media_type_of(content_type)
    return mt in JSON_TYPES or (mt.startswith("application/") and mt.endswith("+json"))


def too_large(limit: int) -> falcon.HTTPError:
    return falcon.HTTPContentTooLarge(description=f"request body larger than {limit} bytes")


def declared_length(environ) -> int | None:
    """Content-Length as Falcon reads it (empty means none), with Falcon's own 400 when it is not a
    number."""
    value = environ.get("CONTENT_LENGTH")
    if not value:
        return None
    try:
        length = int(value)
    except ValueError:
        raise falcon.HTTPInvalidHeader("The value of the header must be a number.", "Content-Length") from None
    if length < 0:
        raise falcon.HTTPInvalidHeader("The value of the header must be a positive number.", "Content-Length")
    return length


def read_body(req: falcon.Request, limit: int) -> bytes:
    return read_body_env(req.env, limit)


def read_body_env(environ, limit: int) -> bytes:
    length = declared_length(environ)
    if length is not None and length > limit:
        raise too_large(limit)
    if not length:
        # waitress de-chunks a chunked body and sets Content-Length, so no length means no body
        return b""
    # never more than declared (the input does not end where the body does) nor than the limit
    data = environ["wsgi.input"].read(length)
    if len(data) > limit:
        raise too_large(limit)
    return data


def parse_json(data: bytes):
    try:
        return json.loads(data)
    except RecursionError:
        raise falcon.HTTPBadRequest(description="request body is not valid JSON (nested too deeply)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise falcon.HTTPBadRequest(description=f"request body is not valid JSON: {exc}") from None


def read_json_object(req: falcon.Request, limit: int, required: bool = True) -> dict:
    """The body as a JSON object. 415 for another content type, 400 for bad JSON or not an object."""
    data = read_body(req, limit)
    if not data.strip():
        if required:
            raise falcon.HTTPBadRequest(description="request body must be a JSON object")
        return {}
    if not is_json(req):
        raise falcon.HTTPUnsupportedMediaType(description="send the request body as application/json")
    value = parse_json(data)
    if not isinstance(value, dict):
        raise falcon.HTTPBadRequest(description="request body must be a JSON object")
    return value
