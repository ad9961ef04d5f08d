"""How a host's device is shared among its warm worker's slots (pure): how many slots, which
NeuronCores or GPU each one gets, and the environment that tells a slot process its share."""

from __future__ import annotations

from img2img.config.worker import WorkerSettings


def one_slot_per_gpu(worker: WorkerSettings, stage_device: str, gpus: int) -> WorkerSettings:
    """With `stages.device` plain `cuda` and no slot layout given, one slot per GPU of the
    host (`gpus` of them): what GPU users expect of a worker by default. A layout that is set
    (`devices`, `core_groups`), a named GPU (`cuda:1`) or none found is kept as it is."""
    if stage_device != "cuda" or worker.devices or worker.core_groups or gpus < 1:
        return worker
    return worker.model_copy(update={"devices": [f"cuda:{i}" for i in range(gpus)]})


def slot_env(worker: WorkerSettings, index: int) -> dict[str, str]:
    """The environment that gives slot `index` its share of the device."""
    env = {"IMG2IMG_SLOT": str(index)}
    if worker.core_groups:
        env["NEURON_RT_VISIBLE_CORES"] = worker.core_groups[index]
    if worker.devices:
        env["IMG2IMG_STAGES__DEVICE"] = worker.devices[index]
    return env
