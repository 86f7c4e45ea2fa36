"""Dataset description files as Darknet and Ultralytics users bring them.

- Darknet ``.data`` (``obj.data``): ``key = value`` lines; ``classes``, ``train``, ``valid``,
  ``names`` (``backup``, ``eval``, ... are ignored). Relative paths are relative to the
  current working directory, as Darknet opens them, and so are the relative image paths
  inside its ``train.txt`` / ``valid.txt``.
- Ultralytics ``data.yaml``: ``path`` (the dataset root; relative to the YAML's folder, else
  to the working directory; default the YAML's folder), ``train`` and ``val`` (each a folder of
  images, a ``.txt`` list or a list of those, relative to ``path``), ``names`` (a list, or a
  dict ``{0: name, ...}``) and optionally ``nc``. Label files follow the images -> labels rule
  (``.../images/x.jpg`` -> ``.../labels/x.txt``); relative lines of a ``.txt`` list are
  relative to ``path``.

``open_detection_source`` also takes a YOLO list / image folder with ``names`` (``--names``),
and falls back to ``keras_csp.data.resolve_source`` for every other form. Errors name the
file and the key.
"""

import dataclasses
import os

from keras_csp.data.pipeline import resolve_source
from keras_csp.data.yolo_txt import YoloFormatError, YoloTxtSource, read_names


class DatasetFileError(ValueError):
    """A ``.data`` / ``data.yaml`` file that cannot be used; the message names the file and key."""


DATA_SUFFIXES = (".data",)
YAML_SUFFIXES = (".yaml", ".yml")


@dataclasses.dataclass
class DatasetFile:
    """A parsed dataset file: the splits (each a list of folders / list files), class names,
    the folder relative image paths in list files start from, and the file itself."""

    path: str
    kind: str  # "darknet" or "ultralytics"
    train: list
    val: list
    names: list
    list_root: str = None

    def source(self, split="train"):
        """The ``YoloTxtSource`` of ``split`` (``train`` or ``val``)."""
        entries = self.train if split == "train" else self.val
        key = {"darknet": {"train": "train", "val": "valid"}, "ultralytics": {"train": "train", "val": "val"}}
        if not entries:
            raise DatasetFileError(f"{self.path}: no `{key[self.kind][split]}` entry: the {split} split is not given")
        name = f"{os.path.basename(self.path)}:{split}"
        return YoloTxtSource(entries if len(entries) > 1 else entries[0], names=self.names, root=self.list_root,
                             name=name)


def is_dataset_file(path):
    """Whether ``path`` names a Darknet ``.data`` or an Ultralytics YAML file."""
    return isinstance(path, (str, os.PathLike)) and os.fspath(path).lower().endswith(DATA_SUFFIXES + YAML_SUFFIXES)


def _resolve(path, base):
    path = os.path.expanduser(str(path).strip())
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(base, path))


def read_darknet_data(path, cwd=None):
    """Parse a Darknet ``.data`` file; relative paths are taken from ``cwd`` (default the
    working directory), as Darknet does."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Darknet .data file not found: {path}")
    cwd = os.getcwd() if cwd is None else os.fspath(cwd)
    values = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            key, sep, value = text.partition("=")
            if not sep:
                raise DatasetFileError(f"{path}:{lineno}: expected 'key = value'; found {line.strip()!r}")
            values[key.strip().lower()] = value.strip()
    if "train" not in values:
        raise DatasetFileError(f"{path}: missing key `train` (the list of training images)")
    names = None
    if "names" in values:
        names_file = _resolve(values["names"], cwd)
        if not os.path.isfile(names_file):
            raise FileNotFoundError(f"{path}: key `names`: file {names_file} not found (relative paths are "
                                    f"relative to the working directory {cwd}, as in Darknet)")
        names = read_names(names_file)
    classes = values.get("classes")
    if classes is not None:
        try:
            classes = int(classes)
        except ValueError:
            raise DatasetFileError(f"{path}: key `classes` must be an integer; found {values['classes']!r}") from None
        if names is not None and len(names) != classes:
            raise DatasetFileError(f"{path}: key `classes` is {classes} but the `names` file {values['names']} "
                                   f"has {len(names)} names")
        if names is None:
            names = [f"class_{i}" for i in range(classes)]
    splits = {}
    for split, key in (("train", "train"), ("val", "valid")):
        if key not in values:
            splits[split] = []
            continue
        target = _resolve(values[key], cwd)
        if not os.path.exists(target):
            raise FileNotFoundError(f"{path}: key `{key}`: {target} not found (relative paths are relative to the "
                                    f"working directory {cwd}, as in Darknet)")
        splits[split] = [target]
    return DatasetFile(path, "darknet", splits["train"], splits["val"], names, list_root=cwd)


def _yaml_names(path, data):
    names = data.get("names")
    if names is None:
        nc = data.get("nc")
        if nc is None:
            return None
        return [f"class_{i}" for i in range(int(nc))]
    if isinstance(names, dict):
        try:
            keyed = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise DatasetFileError(f"{path}: key `names`: a dict's keys must be class ids 0, 1, ...; "
                                   f"found {list(names)}") from None
        if sorted(keyed) != list(range(len(keyed))):
            raise DatasetFileError(f"{path}: key `names`: class ids must be 0..{len(keyed) - 1} without gaps; "
                                   f"found {sorted(keyed)}")
        names = [keyed[i] for i in range(len(keyed))]
    elif isinstance(names, (list, tuple)):
        names = [str(n) for n in names]
    else:
        raise DatasetFileError(f"{path}: key `names` must be a list or a dict {{0: name, ...}}; "
                               f"found {type(names).__name__}")
    nc = data.get("nc")
    if nc is not None and int(nc) != len(names):
        raise DatasetFileError(f"{path}: key `nc` is {nc} but `names` has {len(names)} entries")
    return names


def read_ultralytics_yaml(path):
    """Parse an Ultralytics ``data.yaml`` (see the module docstring for the path rules)."""
    import yaml

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"dataset YAML not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise DatasetFileError(f"{path}: not valid YAML ({err})".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise DatasetFileError(f"{path}: a dataset YAML must be a mapping with `train`, `val`, `names`; "
                               f"found {type(data).__name__}")
    if "train" not in data:
        raise DatasetFileError(f"{path}: missing key `train` (images: a folder, a .txt list or a list of them)")
    here = os.path.dirname(os.path.abspath(path))
    root = here
    if data.get("path"):
        beside, from_cwd = _resolve(data["path"], here), _resolve(data["path"], os.getcwd())
        root = beside if os.path.isdir(beside) or not os.path.isdir(from_cwd) else from_cwd
        if not os.path.isdir(root):
            raise FileNotFoundError(f"{path}: key `path`: folder {data['path']!r} not found (looked in {beside} "
                                    f"and {from_cwd})")
    splits = {}
    for key in ("train", "val"):
        value = data.get(key)
        if value is None:
            splits[key] = []
            continue
        entries = value if isinstance(value, (list, tuple)) else [value]
        resolved = []
        for entry in entries:
            if not isinstance(entry, str):
                raise DatasetFileError(f"{path}: key `{key}`: entries must be paths; found {entry!r}")
            target = _resolve(entry, root)
            if not os.path.exists(target):
                raise FileNotFoundError(f"{path}: key `{key}`: {target} not found (relative to `path` {root})")
            resolved.append(target)
        splits[key] = resolved
    return DatasetFile(path, "ultralytics", splits["train"], splits["val"], _yaml_names(path, data), list_root=root)


def read_dataset_file(path):
    """A ``DatasetFile`` from a Darknet ``.data`` or an Ultralytics ``.yaml`` file."""
    text = os.fspath(path)
    if text.lower().endswith(DATA_SUFFIXES):
        return read_darknet_data(text)
    if text.lower().endswith(YAML_SUFFIXES):
        return read_ultralytics_yaml(text)
    raise DatasetFileError(f"{text}: expected a Darknet .data file or an Ultralytics data .yaml")


def open_detection_source(spec, training=True, names=None):
    """A detection source from ``spec``: a dataset file (its ``train`` or ``val`` split), a
    YOLO list ``.txt`` or an image folder with YOLO labels (with ``names``: a names file or a
    list), or anything ``keras_csp.data.resolve_source`` takes."""
    if not isinstance(spec, (str, os.PathLike)):
        return resolve_source(spec, training=training)
    text = os.fspath(spec)
    if is_dataset_file(text):
        dataset = read_dataset_file(text)
        if names is not None:
            dataset.names = read_names(names)
        return dataset.source("train" if training else "val")
    is_voc = os.path.isdir(os.path.join(text, "Annotations"))
    if text.endswith(".txt") or (os.path.isdir(text) and not is_voc):
        return YoloTxtSource(text, names=names)
    if names is not None:
        raise ValueError(f"--names applies to YOLO txt data (a .txt list, an image folder, a .data or .yaml "
                         f"file); {text!r} carries its own class names")
    return resolve_source(text, training=training)


__all__ = [
    "DatasetFile", "DatasetFileError", "YoloFormatError", "is_dataset_file", "open_detection_source",
    "read_darknet_data", "read_dataset_file", "read_ultralytics_yaml",
]
