"""Line numbers for error messages about JSON files (only computed when an error is raised)."""

import json
import re


def line_of(text, pos):
    """1-based line of character offset ``pos`` in ``text``."""
    return text.count("\n", 0, max(0, pos)) + 1


def entry_line(text, key, index):
    """Line where ``text``'s top-level ``key`` array has its ``index``-th entry, or None.

    Walks the array with ``json``'s own decoder, so it is exact for any formatting; returns
    None if the key cannot be found (the message then names the entry only).
    """
    match = re.search(r'"%s"\s*:\s*\[' % re.escape(key), text)
    if match is None:
        return None
    decoder = json.JSONDecoder()
    pos = match.end()
    for i in range(index + 1):
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if i == index:
            return line_of(text, pos)
        try:
            _, pos = decoder.raw_decode(text, pos)
        except ValueError:
            return None
    return None
