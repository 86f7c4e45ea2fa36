"""Darknet ``.data`` and Ultralytics ``data.yaml`` files, and class names beside a YOLO list:
paths resolved as those tools resolve them, names as a list or a dict, errors naming the
file and the key."""

import numpy as np
import pytest
from PIL import Image

from keras_csp.data.dataset_files import (
    DatasetFileError,
    open_detection_source,
    read_darknet_data,
    read_ultralytics_yaml,
)
from keras_csp.data.yolo_txt import YoloFormatError, YoloTxtSource


def _image(path, label_rows=None, labels_dir=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(path)
    if label_rows is not None:
        labels_dir.mkdir(parents=True, exist_ok=True)
        (labels_dir / (path.stem + ".txt")).write_text(label_rows)


def _darknet(root):
    """Darknet's layout: data/obj.data, data/obj.names, data/train.txt with cwd-relative lines."""
    for i, rows in enumerate(["0 0.5 0.5 0.4 0.4\n", "1 0.25 0.25 0.2 0.2\n0 0.7 0.7 0.2 0.2\n", None]):
        _image(root / "data/obj/images" / f"img{i}.jpg", rows, root / "data/obj/labels")
    (root / "data/train.txt").write_text("data/obj/images/img0.jpg\ndata/obj/images/img1.jpg\n")
    (root / "data/valid.txt").write_text("data/obj/images/img2.jpg\n")
    (root / "data/obj.names").write_text("cat\ndog\n")
    (root / "data/obj.data").write_text("# my dataset\nclasses= 2\ntrain  = data/train.txt\nvalid = data/valid.txt\n"
                                        "names = data/obj.names\nbackup = backup/\n")
    return root / "data/obj.data"


def test_darknet_data_paths_are_relative_to_the_working_directory(tmp_path, monkeypatch):
    path = _darknet(tmp_path)
    monkeypatch.chdir(tmp_path)
    dataset = read_darknet_data("data/obj.data")
    assert dataset.names == ["cat", "dog"]
    train, val = dataset.source("train"), dataset.source("val")
    assert train.class_names == ["cat", "dog"] and len(train) == 2 and len(val) == 1
    assert [r.classes.tolist() for r in train.records] == [[0], [1, 0]]
    np.testing.assert_allclose(train.records[0].boxes, [[0.3, 0.3, 0.7, 0.7]], atol=1e-6)
    assert val.report.notes["no label file"] == 1  # a background image, as in Darknet
    # From another working directory the same relative paths do not resolve: the error says where it looked.
    monkeypatch.chdir(tmp_path / "data")
    with pytest.raises(FileNotFoundError, match=r"obj\.data: key `names`: .* relative to the working directory"):
        read_darknet_data(path)


@pytest.mark.parametrize("text, match", [
    ("classes = 3\ntrain = data/train.txt\nnames = data/obj.names\n", r"obj\.data: key `classes` is 3 but .* 2 names"),
    ("classes = two\ntrain = data/train.txt\n", r"obj\.data: key `classes` must be an integer"),
    ("classes = 2\nvalid = data/valid.txt\n", r"obj\.data: missing key `train`"),
    ("classes = 2\ntrain data/train.txt\n", r"obj\.data:2: expected 'key = value'"),
])
def test_darknet_data_errors_name_the_file_and_key(tmp_path, monkeypatch, text, match):
    path = _darknet(tmp_path)
    path.write_text(text)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetFileError, match=match):
        read_darknet_data(path)


def _ultralytics(root):
    """Ultralytics' layout: datasets/shapes/{images,labels}/{train,val}, the YAML in configs/."""
    ds = root / "datasets/shapes"
    _image(ds / "images/train/a.jpg", "1 0.5 0.5 0.5 0.5\n", ds / "labels/train")
    _image(ds / "images/train/sub/b.jpg", "0 0.5 0.5 0.2 0.2\n", ds / "labels/train/sub")
    _image(ds / "images/val/c.jpg", "2 0.4 0.4 0.2 0.2\n", ds / "labels/val")
    (ds / "val.txt").write_text("./images/val/c.jpg\n")
    (root / "configs").mkdir()
    return ds


def test_ultralytics_yaml_folder_list_and_names_dict(tmp_path):
    _ultralytics(tmp_path)
    yaml_path = tmp_path / "configs/shapes.yaml"
    yaml_path.write_text("path: ../datasets/shapes\ntrain: images/train\nval: val.txt\n"
                         "names:\n  0: circle\n  1: square\n  2: star\n")
    dataset = read_ultralytics_yaml(yaml_path)
    assert dataset.names == ["circle", "square", "star"]
    train, val = dataset.source("train"), dataset.source("val")
    assert len(train) == 2 and [r.classes.tolist() for r in train.records] == [[1], [0]]  # sub-folders too
    assert len(val) == 1 and val.records[0].classes.tolist() == [2]
    assert train.class_names == val.class_names == ["circle", "square", "star"]


def test_ultralytics_yaml_without_path_and_names_list(tmp_path):
    ds = _ultralytics(tmp_path)
    (ds / "data.yaml").write_text("train: [images/train, images/val]\nval: images/val\nnc: 3\n"
                                  "names: [circle, square, star]\n")
    source = open_detection_source(ds / "data.yaml", training=True)
    assert len(source) == 3 and source.class_names[2] == "star"
    assert len(open_detection_source(ds / "data.yaml", training=False)) == 1


@pytest.mark.parametrize("text, error, match", [
    ("train: images/train\nnames: {0: a, 2: c}\n", DatasetFileError, r"data\.yaml: key `names`: class ids must be 0\.\.1"),
    ("train: images/train\nnc: 2\nnames: [a, b, c]\n", DatasetFileError, r"data\.yaml: key `nc` is 2 but `names` has 3"),
    ("train: images/nothere\nnames: [a]\n", FileNotFoundError, r"data\.yaml: key `train`: .*nothere not found"),
    ("val: images/val\nnames: [a]\n", DatasetFileError, r"data\.yaml: missing key `train`"),
    ("path: /no/such/root\ntrain: images/train\n", FileNotFoundError, r"data\.yaml: key `path`"),
    ("train: images/train\nnames: circle\n", DatasetFileError, r"key `names` must be a list or a dict"),
])
def test_ultralytics_yaml_errors_name_the_file_and_key(tmp_path, text, error, match):
    ds = _ultralytics(tmp_path)
    (ds / "data.yaml").write_text(text)
    with pytest.raises(error, match=match):
        read_ultralytics_yaml(ds / "data.yaml")


def test_missing_split_names_the_key(tmp_path):
    ds = _ultralytics(tmp_path)
    (ds / "data.yaml").write_text("train: images/train\nnames: [a, b, c]\n")
    with pytest.raises(DatasetFileError, match=r"data\.yaml: no `val` entry"):
        read_ultralytics_yaml(ds / "data.yaml").source("val")


def test_yolo_list_picks_up_names_beside_it_and_names_flag_wins(tmp_path):
    ds = _ultralytics(tmp_path)
    (ds / "list.txt").write_text("images/train/a.jpg\nimages/val/c.jpg\n")
    assert YoloTxtSource(ds / "list.txt").class_names == ["class_0", "class_1", "class_2"]
    (ds / "shapes.names").write_text("circle\nsquare\nstar\n")
    assert YoloTxtSource(ds / "list.txt").class_names == ["circle", "square", "star"]  # the only *.names
    (ds / "classes.txt").write_text("o\nq\ns\n")
    source = YoloTxtSource(ds / "list.txt")
    assert source.class_names == ["o", "q", "s"] and source.names_file.endswith("classes.txt")
    (ds / "mine.names").write_text("x\ny\nz\n")
    assert open_detection_source(ds / "list.txt", names=str(ds / "mine.names")).class_names == ["x", "y", "z"]
    (ds / "classes.txt").unlink()
    with pytest.raises(YoloFormatError, match=r"several names files \['mine\.names', 'shapes\.names'\]"):
        YoloTxtSource(ds / "list.txt")
    # An image folder finds classes.txt in its labels folder (LabelImg writes it there).
    (ds / "labels/val/classes.txt").write_text("p\nq\nr\n")
    assert YoloTxtSource(ds / "images/val").class_names == ["p", "q", "r"]


def test_names_for_a_source_with_its_own_names_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="--names applies to YOLO txt data"):
        open_detection_source(str(tmp_path / "annotations.json"), names=["a"])


def test_train_config_data_gives_both_splits_and_their_names(tmp_path, monkeypatch):
    from keras_csp.training.config import make_config
    from keras_csp.training.run import resolve_sources

    _darknet(tmp_path)
    monkeypatch.chdir(tmp_path)
    train, val = resolve_sources(make_config(data="data/obj.data"))
    assert train.class_names == val.class_names == ["cat", "dog"] and (len(train), len(val)) == (2, 1)
    train, val = resolve_sources(make_config(train="data/train.txt", val="data/valid.txt",
                                             names="data/obj.names"))
    assert train.class_names == val.class_names == ["cat", "dog"]
    with pytest.raises(ValueError, match="config `data` .* `train` .* cannot be given too"):
        make_config(data="data/obj.data", train="data/train.txt")


def test_cli_reports_a_bad_dataset_file_in_one_line(tmp_path, capsys):
    from keras_csp.cli import main

    (tmp_path / "obj.data").write_text("classes = 2\nvalid = v.txt\n")
    assert main(["train", "--data", str(tmp_path / "obj.data"), "--no-tensorboard", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "obj.data: missing key `train`" in err[0]
