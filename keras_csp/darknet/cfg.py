"""Darknet ``.cfg`` parser: sections, options and typed option access with clear errors.

Follows Darknet's ``read_cfg``: all whitespace is removed from a line, lines starting with
``#`` or ``;`` are comments, ``[name]`` starts a section and ``key=value`` adds an option to
the current one. Unlike Darknet, malformed lines, unknown sections, repeated options and
values that are not numbers are errors naming the file, line and option. (A repeated
option is an error in a layer section; in [net] it only warns and the first value wins, as in
Darknet, because the authors' enetb0.cfg repeats training options there.)
"""

import os
import warnings
from dataclasses import dataclass, field

# Section names Darknet accepts, mapped to one canonical name (Darknet's aliases included).
SECTION_ALIASES = {
    "net": "net",
    "network": "net",
    "convolutional": "convolutional",
    "conv": "convolutional",
    "connected": "connected",
    "conn": "connected",
    "maxpool": "maxpool",
    "max": "maxpool",
    "local_avgpool": "local_avgpool",
    "avgpool": "avgpool",
    "avg": "avgpool",
    "route": "route",
    "shortcut": "shortcut",
    "upsample": "upsample",
    "softmax": "softmax",
    "soft": "softmax",
    "dropout": "dropout",
    "batchnorm": "batchnorm",
    "scale_channels": "scale_channels",
    "sam": "sam",
    "reorg": "reorg",
    "yolo": "yolo",
    "cost": "cost",
}


class CfgError(ValueError):
    """A problem in a Darknet cfg; the message starts with ``file:line``."""

    def __init__(self, message, path=None, line=None, option=None):
        self.path = path
        self.line = line
        self.option = option
        where = _where(path, line)
        super().__init__(f"{where}: {message}" if where else message)


def _where(path, line):
    if path is None and line is None:
        return ""
    if line is None:
        return f"{path}"
    return f"{path or '<cfg>'}:{line}"


@dataclass
class Section:
    """One ``[section]`` of a cfg: its canonical type, raw options and where it was written.

    Options are read through the typed getters, which record what was used, so that
    options nothing read can be reported as unknown (see :meth:`unused_options`).
    """

    type: str
    line: int
    path: str = "<cfg>"
    header: str = ""
    options: dict = field(default_factory=dict)  # key -> raw string value
    option_lines: dict = field(default_factory=dict)  # key -> line number
    used: set = field(default_factory=set)

    # -- location helpers -------------------------------------------------------------
    def where(self, option=None):
        """``file:line`` of the option if given and present, else of the section header."""
        line = self.option_lines.get(option, self.line) if option else self.line
        return _where(self.path, line)

    def error(self, message, option=None):
        """A CfgError located at ``option`` (or the section header) of this section."""
        line = self.option_lines.get(option, self.line) if option else self.line
        return CfgError(f"[{self.header or self.type}] {message}", self.path, line, option)

    # -- typed access -----------------------------------------------------------------
    def has(self, key):
        return key in self.options

    def get_str(self, key, default=None, required=False):
        if key not in self.options:
            if required:
                raise self.error(f"option {key!r} is required")
            return default
        self.used.add(key)
        return self.options[key]

    def get_int(self, key, default=None, required=False):
        raw = self.get_str(key, None, required)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            raise self.error(f"option {key}={raw!r}: expected an integer", key) from None

    def get_float(self, key, default=None, required=False):
        raw = self.get_str(key, None, required)
        if raw is None:
            return default
        try:
            return float(raw)
        except ValueError:
            raise self.error(f"option {key}={raw!r}: expected a number", key) from None

    def get_list(self, key, kind=int, default=None, required=False):
        """A comma-separated list of ``kind`` values (empty items are an error)."""
        raw = self.get_str(key, None, required)
        if raw is None:
            return default
        items = raw.split(",")
        if any(item == "" for item in items):
            raise self.error(f"option {key}={raw!r}: empty item in the comma-separated list", key)
        try:
            return [kind(item) for item in items]
        except ValueError:
            what = "integers" if kind is int else "numbers"
            raise self.error(f"option {key}={raw!r}: expected comma-separated {what}", key) from None

    def ignore(self, *keys):
        """Mark options as known but without effect here (training-only settings)."""
        self.used.update(k for k in keys if k in self.options)

    def unused_options(self):
        return [k for k in self.options if k not in self.used]

    def check_all_used(self):
        """Raise a CfgError for the first option that nothing read (an unknown option)."""
        for key in self.unused_options():
            raise self.error(
                f"unknown option {key!r} (= {self.options[key]!r}) for a [{self.type}] section", key
            )


@dataclass
class Cfg:
    """A parsed cfg: the ``[net]`` section and the layer sections in file order."""

    path: str
    net: Section
    layers: list

    @property
    def name(self):
        base = os.path.basename(self.path)
        return base[:-4] if base.endswith(".cfg") else base


def parse_cfg_text(text, path="<cfg>"):
    """Parse cfg text into a :class:`Cfg` (``path`` is only used in messages)."""
    sections = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = "".join(raw.split())
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            if not line.endswith("]"):
                raise CfgError(f"section header {raw.strip()!r} does not end with ']'", path, number)
            header = line[1:-1]
            kind = SECTION_ALIASES.get(header)
            if kind is None:
                known = ", ".join(sorted(set(SECTION_ALIASES.values())))
                raise CfgError(
                    f"unknown section [{header}]; supported sections: {known}", path, number
                )
            sections.append(Section(type=kind, line=number, path=path, header=header))
            continue
        if "=" not in line:
            raise CfgError(f"cannot parse {raw.strip()!r}: expected key=value", path, number)
        if not sections:
            raise CfgError(f"option {raw.strip()!r} before the first [section]", path, number)
        key, value = line.split("=", 1)
        if not key:
            raise CfgError(f"option {raw.strip()!r} has no name", path, number)
        section = sections[-1]
        if key in section.options:
            message = (
                f"[{section.header}] option {key!r} given twice (first on line "
                f"{section.option_lines[key]})"
            )
            if section.type != "net":
                raise CfgError(message, path, number, key)
            # Darknet keeps the first value; the authors' enetb0.cfg repeats training options.
            warnings.warn(f"{path}:{number}: {message}; the first value is used, as in Darknet")
            continue
        section.options[key] = value
        section.option_lines[key] = number
    if not sections:
        raise CfgError("the cfg has no sections", path)
    if sections[0].type != "net":
        raise CfgError(
            f"the first section must be [net] or [network], got [{sections[0].header}]",
            path,
            sections[0].line,
        )
    for extra in sections[1:]:
        if extra.type == "net":
            raise CfgError("[net] may only be the first section", path, extra.line)
    return Cfg(path=path, net=sections[0], layers=sections[1:])


def parse_cfg(source):
    """Parse a Darknet cfg from a path (str or os.PathLike) or return a :class:`Cfg` as is.

    Text containing a newline is parsed directly, so tests and tools can pass cfg strings.
    """
    if isinstance(source, Cfg):
        return source
    if isinstance(source, str) and "\n" in source:
        return parse_cfg_text(source)
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Darknet cfg not found: {path}")
    with open(path, encoding="latin-1") as handle:
        return parse_cfg_text(handle.read(), path)
