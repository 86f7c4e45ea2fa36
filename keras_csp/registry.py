"""Every buildable model by name: model modules register their builders, resolvers look names up.

Standard library only and imported by everything that resolves a name, so it sits at the bottom
of the import graph: a detector resolving its backbone's name never imports the layer above it.

The one name grammar (:func:`build`), used by the builders, ``keras-csp train``, ``export`` and
``profile``:

- a registered name: a backbone builder (``CSPDarknet53``), a cfg variant of the reference repo
  (``csdarknet53-omega``) or a named detector (``CSPDarknet53-PANet-SPP``);
- ``BACKBONE+NECK`` (``CSPResNeXt50+panet_spp``): a detector composed by the builder that
  :func:`register_composition` installed (``keras_csp.detectors`` installs YOLODetector's);
- ``package.module:function``: the user's own factory, imported and called with the arguments.
"""

import importlib

KINDS = ("backbone", "variant", "detector")

_BUILDERS = {}  # name -> (kind, builder)
_COMPOSE = []  # at most one builder(left, right, **kwargs) for BACKBONE+NECK names


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


def register_composition(builder):
    """Make ``build("LEFT+RIGHT", **kwargs)`` call ``builder("LEFT", "RIGHT", **kwargs)`` (one
    composition; a later call replaces it). Returns ``builder``."""
    if not callable(builder):
        raise TypeError(f"composition builder must be callable; received {type(builder).__name__}.")
    _COMPOSE[:] = [builder]
    return builder


def factory(name):
    """The function ``package.module:function`` names, or a ValueError saying why not."""
    module_name, _, function_name = str(name).partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"model factory {name!r} not found ({err})") from err
    if not callable(function):
        raise ValueError(f"model factory {name!r} is not callable ({type(function).__name__})")
    return function


def build(name, **kwargs):
    """Build the model ``name`` (the grammar of the module docstring) with ``kwargs``."""
    name = str(name)
    if name in _BUILDERS:
        return _BUILDERS[name][1](**kwargs)
    if ":" in name:
        return factory(name)(**kwargs)
    if "+" in name and _COMPOSE:
        left, right = name.split("+", 1)
        return _COMPOSE[0](left, right, **kwargs)
    raise ValueError(
        f"Unknown model {name!r}: expected a registered name ({', '.join(names())}), "
        "BACKBONE+NECK (one of those backbones with a neck of keras_csp.detectors.necks.NECKS) "
        "or package.module:function.")


__all__ = ["KINDS", "build", "factory", "kind_of", "names", "register", "register_composition"]
