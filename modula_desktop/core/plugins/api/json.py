"""The `json` module of the plugin API (SPEC 3.7): json.encode / json.decode, bounded."""
from __future__ import annotations

import json

from ..errors import ApiError

MAX_JSON_BYTES = 4 * 1024 * 1024


def encode(sb, value) -> str:
    # at most the memory limit of JSON text (its result must fit in the VM): ConversionLimit, which
    # the host call raises as the memory budget's error
    value = sb.from_lua(value, max_bytes=sb.memory_limit, json_text=True)
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (ValueError, TypeError) as exc:
        raise ApiError(f"json.encode: {exc}") from None


def decode(text):
    if not isinstance(text, bytes):
        raise ApiError("json.decode: argument must be a string")
    if len(text) > MAX_JSON_BYTES:
        # Python builds the whole value before the VM's memory limit can see it
        raise ApiError(f"json.decode: input larger than {MAX_JSON_BYTES // 2**20} MiB")
    try:
        return json.loads(text.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(f"json.decode: invalid JSON ({exc})") from None
    except RecursionError:
        raise ApiError("json.decode: nested too deeply") from None
