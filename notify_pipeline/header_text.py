"""Is a caller's string safe to place in a header? The policy-time test behind `header_injection`.

A header line ends at CR or LF, but parsers and folders also break lines at VT, FF, the
separators U+001C-U+001E, NEL, LS and PS (`str.splitlines`), so a caller string holding any of
them could start a header of its own, or make the renderer fail after the message was claimed.
Other C0 and C1 controls, DEL and ESC have no business in a header either and are refused with
them; a tab is ordinary white space and allowed. RFC 2047 encoded words (`=?utf-8?q?...?=`) are
decoded by some interpreters' header parsers (CPython before 3.11.10 / 3.12.5 among them) and by
mail readers, so one whose decoded text holds a control is refused as if it were written out.
"""

from __future__ import annotations

import base64
import codecs
import quopri
import re

# C0 except TAB, DEL, C1, LS, PS, and lone surrogates (which no encoding can write).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_ASCII_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# As lenient as the most lenient decoder: any charset and payload between `=?` and `?=`.
_ENCODED_WORD = re.compile(r"=\?([^?]*)\?([bBqQ])\?(.*?)\?=", re.DOTALL)


def problem(value: str) -> str | None:
    """Why `value` may not go into a header, or None when it may."""
    found = _CONTROL.search(value)
    if found:
        return f"contains the control character U+{ord(found.group()):04X}"
    if "=?" in value and any(_holds_control(*word) for word in _ENCODED_WORD.findall(value)):
        return "contains an RFC 2047 encoded word whose text holds a line break or control"
    return None


def _holds_control(charset: str, encoding: str, payload: str) -> bool:
    """Whether the word's text holds a control, read in its charset, or an ASCII control
    byte whatever the charset (a reader may take it for any ASCII-compatible one)."""
    raw = _decode_payload(encoding.lower(), payload)
    text = raw.decode(_codec(charset), errors="replace")
    return bool(_CONTROL.search(text) or _ASCII_CONTROL.search(raw))


def _decode_payload(encoding: str, payload: str) -> bytes:
    data = payload.encode("ascii", errors="replace")
    if encoding == "q":
        return quopri.decodestring(data, header=True)
    cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
    if len(cleaned) % 4 == 1:  # a dangling character carries no whole byte: lenient
        cleaned = cleaned[:-1]  # decoders drop it, and so do we
    return base64.b64decode(cleaned + b"=" * (-len(cleaned) % 4))


def _codec(charset: str) -> str:
    """The codec for an encoded word's charset (RFC 2231 may add `*language`); latin-1 when
    Python does not know it, since that reads every byte."""
    name = charset.partition("*")[0]
    try:
        return codecs.lookup(name).name
    except LookupError:
        return "latin-1"
