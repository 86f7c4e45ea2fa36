"""Every buildable model by name: model modules register their builders, resolvers look names up.

Standard library only and imported by everything that resolves a name, so it sits at the bottom
of the import graph: a detector resolving its backbone's name never imports the layer above it.
"""

KINDS = ("backbone", "variant", "detector")

_BUILDERS = {}  # name -> (kind, builder)


def register(name, builder, kind="backbone"):
    """Make ``build(name, **kwargs)`` call ``builder(**kwargs)``; a later call for ``name`` replaces it.

    ``kind`` is one of :data:`KINDS`: a builder function, a cfg variant name (a builder with
    preset arguments) or a named detector. Returns ``builder``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; received kind={kind!r}.")
    if not callable(builder):
        raise TypeError(f"builder for {name!r} must be callable; received {type(builder).__name__}.")
    _BUILDERS[name] = (kind, builder)
    return builder


def names(kind=None):
    """Sorted registered names, all of them or those of one ``kind``."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; received kind={kind!r}.")
    return sorted(name for name, (k, _) in _BUILDERS.items() if kind is None or k == kind)


def kind_of(name):
    """The kind ``name`` was registered with, or None when it is not registered."""
    entry = _BUILDERS.get(name)
    return None if entry is None else entry[0]


def build(name, **kwargs):
    """Build the model registered as ``name`` with ``kwargs``."""
    if name not in _BUILDERS:
        raise ValueError(f"Unknown model {name!r}; known models: {', '.join(names())}.")
    return _BUILDERS[name][1](**kwargs)
