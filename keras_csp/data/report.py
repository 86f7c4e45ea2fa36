"""What a source skipped, dropped or converted, and why: counted, summarised, logged once.

Bad input never stops an epoch: an unusable image is skipped, an unusable box dropped, and
each is recorded here under a reason with the file it came from.
"""

import collections
import logging

from keras_csp.backend import tf

LOGGER = logging.getLogger("keras_csp.data")

MAX_EXAMPLES = 10  # files remembered per reason; counts are always complete

BOXES_CUT = "target boxes cut (more objects in one training image than max_boxes rows)"
"""In-graph counter: training boxes that did not fit the padded box tensor (never silent)."""
GROUND_TRUTH_CUT = "ground-truth boxes cut (more objects in one evaluation image than max_boxes rows)"
"""In-graph counter: evaluation boxes that did not fit (they would be missing from the AP)."""


class SkipReport:
    """Counts of skipped images, dropped boxes and converted images, by reason.

    ``skipped_images``, ``dropped_boxes`` and ``converted_images`` map a reason to a count;
    ``examples(kind, reason)`` lists up to ``MAX_EXAMPLES`` ``"file: detail"`` strings.
    Images that fail to decode while the pipeline runs (they passed the checks made when the
    source was built) are counted in ``runtime_failures`` by in-graph counters.
    """

    def __init__(self, name):
        self.name = name
        self.skipped_images = collections.Counter()
        self.dropped_boxes = collections.Counter()
        self.converted_images = collections.Counter()
        self.notes = collections.Counter()
        self._examples = collections.defaultdict(list)
        self._logged = False
        self._counters = {}
        self._warned = set()

    # -- recording ------------------------------------------------------------------------
    def _add(self, counter, kind, reason, file, detail, count=1):
        counter[reason] += count
        examples = self._examples[(kind, reason)]
        if len(examples) < MAX_EXAMPLES:
            examples.append(f"{file}: {detail}" if detail else str(file))

    def skip_image(self, reason, file, detail=""):
        """Record an image left out of the dataset."""
        self._add(self.skipped_images, "image", reason, file, detail)

    def drop_box(self, reason, file, detail="", count=1):
        """Record ``count`` boxes left out of an image's annotations."""
        self._add(self.dropped_boxes, "box", reason, file, detail, count)

    def convert_image(self, reason, file, detail=""):
        """Record an image kept after a sound conversion (grayscale, RGBA, 16-bit, palette)."""
        self._add(self.converted_images, "converted", reason, file, detail)

    def note(self, reason, file, detail=""):
        """Record something worth knowing that changes nothing (empty annotations, no label file)."""
        self._add(self.notes, "note", reason, file, detail)

    def examples(self, kind, reason):
        """Up to ``MAX_EXAMPLES`` files for ``kind`` in image/box/converted/note and ``reason``."""
        return list(self._examples.get((kind, reason), []))

    # -- in-graph counters ------------------------------------------------------------------
    def runtime_counter(self, name):
        """An int64 variable that pipeline functions increment in the graph, shown in the summary."""
        if name not in self._counters:
            with tf.init_scope():
                self._counters[name] = tf.Variable(0, dtype=tf.int64, trainable=False)
        return self._counters[name]

    def count_in_graph(self, name, amount, warning):
        """Add ``amount`` to the in-graph counter ``name`` and return the update op (make the
        pipeline's output depend on it). The first positive amount logs ``warning`` once, at
        WARNING level, from inside the pipeline (a ``tf.py_function`` run only then)."""
        counter = self.runtime_counter(name)
        amount = tf.cast(amount, tf.int64)
        update = counter.assign_add(amount)

        def warn():
            return tf.py_function(lambda n: self._warn_once(name, warning, int(n)), [amount], tf.bool)

        once = tf.cond(amount > 0, warn, lambda: tf.constant(False))
        return tf.group(update, once)

    def _warn_once(self, name, warning, amount):
        if name not in self._warned:
            self._warned.add(name)
            LOGGER.warning("%s: %s (%d in the first affected batch; the total is in %s's report)", self.name,
                           warning, amount, self.name)
        return True

    def runtime_counts(self):
        """Current values of the in-graph counters (``attempted``/``decoded`` are the loader's)."""
        return {k: int(v.numpy()) for k, v in self._counters.items()}

    @property
    def runtime_failures(self):
        """Images that failed to load while iterating (0 before any iteration)."""
        counts = self.runtime_counts()
        return counts.get("attempted", 0) - counts.get("decoded", 0)

    # -- summary ----------------------------------------------------------------------------
    @property
    def num_skipped(self):
        return sum(self.skipped_images.values())

    @property
    def num_dropped_boxes(self):
        return sum(self.dropped_boxes.values())

    @property
    def num_cut_boxes(self):
        """Boxes cut so far by ``max_boxes`` (training targets and evaluation ground truth)."""
        counts = self.runtime_counts()
        return counts.get(BOXES_CUT, 0) + counts.get(GROUND_TRUTH_CUT, 0)

    def as_dict(self):
        """Plain-dict view (counts only), handy for logs and tests."""
        return {
            "skipped_images": dict(self.skipped_images),
            "dropped_boxes": dict(self.dropped_boxes),
            "converted_images": dict(self.converted_images),
            "notes": dict(self.notes),
            "runtime_failures": self.runtime_failures,
            "runtime_counts": {
                k: v for k, v in self.runtime_counts().items() if k not in ("attempted", "decoded")
            },
        }

    def summary(self):
        """A multi-line human summary: how many, why, which files."""
        lines = [f"{self.name}:"]
        sections = (
            ("skipped images", "image", self.skipped_images),
            ("dropped boxes", "box", self.dropped_boxes),
            ("converted images", "converted", self.converted_images),
            ("notes", "note", self.notes),
        )
        for title, kind, counter in sections:
            if not counter:
                continue
            lines.append(f"  {title}: {sum(counter.values())}")
            for reason, count in sorted(counter.items()):
                files = self.examples(kind, reason)
                more = " ..." if count > len(files) and kind != "box" else ""
                lines.append(f"    {reason}: {count} (e.g. {'; '.join(files)}{more})")
        if self.runtime_failures:
            lines.append(
                f"  images that failed to decode while iterating: {self.runtime_failures} "
                "(see the TensorFlow warnings for the errors)"
            )
        for name, count in sorted(self.runtime_counts().items()):
            if name not in ("attempted", "decoded") and count:
                lines.append(f"  {name}: {count}")
        if len(lines) == 1:
            lines.append("  nothing skipped, dropped or converted")
        return "\n".join(lines)

    def log_once(self, logger=LOGGER):
        """Log the summary at WARNING level (INFO when nothing was lost), only the first time."""
        if self._logged:
            return
        self._logged = True
        lost = self.num_skipped or self.num_dropped_boxes
        logger.log(logging.WARNING if lost else logging.INFO, self.summary())

    def __repr__(self):
        return f"SkipReport({self.name!r}, {self.as_dict()})"
