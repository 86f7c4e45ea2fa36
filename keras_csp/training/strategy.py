"""``tf.distribute`` for ``fit``: one device, several (mirrored) or several machines.

- ``default``: the current (default) strategy: one device.
- ``mirrored``: ``MirroredStrategy`` over the local GPUs (or CPUs split into logical
  devices with ``cpu_devices=N``, for tests and for trying it without GPUs).
- ``multi_worker``: ``MultiWorkerMirroredStrategy``; every worker runs the same command with
  its own ``TF_CONFIG`` (cluster addresses and its task index). Worker 0 is the chief: it
  writes the outputs; the others write to ``<out>/workers/worker-<i>``.
- ``tpu``: ``TPUStrategy`` with ``TPUClusterResolver(tpu=...)`` (shapes are static already).

The batch size given to the data pipeline is the global batch; Keras splits each batch
over the replicas (it must divide evenly) and ``YOLOTask`` scales the loss by the number of
replicas, so the gradients are those of the global batch's mean loss.

How to run
----------
- A multi-GPU host: ``keras-csp train --strategy mirrored --batch-size 64 ...`` (64 over all
  GPUs; scale the learning rate with the global batch as the cfgs do: batch 64, lr 1e-3).
- Several machines: start the same command on each with ``--strategy multi_worker`` and
  ``TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type":
  "worker", "index": I}}'`` (``I`` = 0 on the chief). A killed worker: restart all of them;
  each resumes from its backup.
- A Cloud TPU VM: ``keras-csp train --strategy tpu --batch-size 128 --steps-per-execution 32``
  with data the TPU can read (TFDS on GCS, ``tfds:coco/2017``). Every tensor has a static
  shape (padded boxes, fixed image size, ``drop_remainder``), as XLA needs; keep
  ``--multi-scale`` off, it changes the input shape.
- Batch norm statistics are per replica (no cross-replica sync); with small per-replica
  batches, prefer fewer, larger replicas.
"""

import json
import os

from keras_csp.backend import tf

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
_CREATED = {}  # one strategy per kind and process: collective ops of two would collide


def split_cpu(count):
    """Split the host CPU into ``count`` logical devices (before TensorFlow starts using it)."""
    if int(count) < 2:
        return
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * int(count))
    except RuntimeError as err:
        existing = len(tf.config.list_logical_devices("CPU"))
        if existing != int(count):
            raise RuntimeError(
                f"cannot split the CPU into {count} devices: TensorFlow is already initialised with "
                f"{existing}; call split_cpu first thing in the process"
            ) from err


def make_strategy(name="default", cpu_devices=0, tpu=None):
    """The ``tf.distribute`` strategy called ``name`` (see the module docstring).

    Args:
      name: one of ``STRATEGIES``.
      cpu_devices: with ``mirrored``, split the CPU into this many logical devices when no
        GPU is present (0: leave the CPU as one device).
      tpu: TPU name or address for ``tpu`` (default: from the environment).

    A process gets one strategy of each kind: asking again returns the same object.
    """
    if name not in STRATEGIES:
        raise ValueError(f"`strategy` must be one of {STRATEGIES}; received {name!r}")
    if name == "default":
        return tf.distribute.get_strategy()
    key = (name, int(cpu_devices or 0), tpu)
    if key not in _CREATED:
        _CREATED[key] = _create(name, cpu_devices, tpu)
    return _CREATED[key]


def _create(name, cpu_devices, tpu):
    if name == "mirrored":
        gpus = tf.config.list_physical_devices("GPU")
        if not gpus and cpu_devices:
            split_cpu(cpu_devices)
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
            return tf.distribute.MirroredStrategy(devices=devices)
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "--strategy multi_worker needs TF_CONFIG, e.g. "
                '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}'
            )
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.AUTO
        )
        return _multi_worker_class()(communication_options=options)
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def _multi_worker_class():
    """``MultiWorkerMirroredStrategy`` with a ``reduce`` that Keras 3's ``fit`` can use.

    Keras 3.15 calls ``reduce`` on the whole first batch (a tuple; the stock class takes one
    tensor: "Attempt to convert a value (PerReplica...)") and with ``axis=0`` on the scalar
    loss and metrics ("Invalid reduction dimension 0 for input with 0 dimensions"). Nested
    values are reduced leaf by leaf and scalars across replicas only, as
    ``MirroredStrategy`` does.
    """

    class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis):
            parent = super(MultiWorkerMirroredStrategy, self)
            if isinstance(value, (tuple, list, dict)):
                return tf.nest.map_structure(lambda v: self.reduce(reduce_op, v, axis), value)
            if axis is not None:
                local = self.experimental_local_results(value)[0]
                if getattr(local, "shape", None) is not None and local.shape.rank == 0:
                    axis = None
            return parent.reduce(reduce_op, value, axis)

    return MultiWorkerMirroredStrategy


def task_info():
    """``(task type, index)`` from ``TF_CONFIG`` (``(None, 0)`` when not multi-worker)."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = config.get("task", {})
    return task.get("type"), int(task.get("index", 0))


def is_chief():
    """Whether this process writes the outputs: worker 0 (or a chief task), or no cluster."""
    task_type, index = task_info()
    return task_type in (None, "chief") or (task_type == "worker" and index == 0 and not _has_chief())


def _has_chief():
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    return bool(config.get("cluster", {}).get("chief"))


def output_dir(out_dir):
    """Where this process writes: ``out_dir`` for the chief, a per-worker folder otherwise."""
    if is_chief():
        return out_dir
    task_type, index = task_info()
    return os.path.join(out_dir, "workers", f"{task_type}-{index}")


def check_global_batch(batch_size, strategy):
    """The per-replica batch; the global batch must split evenly over the replicas."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(
            f"the global batch size {batch_size} does not split evenly over {replicas} replicas; "
            f"use a multiple of {replicas}"
        )
    return batch_size // replicas


def shard_by_data(dataset):
    """Tell ``tf.distribute`` to shard ``dataset`` by element (our sources are in-memory
    file lists, so per-file sharding does not apply)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


__all__ = [
    "STRATEGIES", "check_global_batch", "is_chief", "make_strategy", "output_dir", "shard_by_data",
    "split_cpu", "task_info",
]
