"""The model folders lmshrink serves from, recognised and loaded the way each is served.

A folder is one of: a Hugging Face or distill-run folder (PyTorch eager, fp32), a
`torch-int8/` folder from `lmshrink quantize` (PyTorch dynamic int8, rebuilt on load), or an
ONNX folder from `lmshrink export` or `quantize` (ONNX Runtime, fp32 or int8 as written).
`lmshrink bench` compares any mix of them; each reads the texts through its own tokenizer.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from lmshrink.compress.int8 import QUANT_FILE, RESULT_FILE, load_quantized, serialized_bytes
from lmshrink.compress.onnx import EXPORT_FILE, MODEL_FILE, OnnxClassifier, onnx_parameters
from lmshrink.config import DataConfig
from lmshrink.data.tasks import Task
from lmshrink.errors import ConfigError, ModelError
from lmshrink.models.loading import (
    count_parameters,
    load_for_eval,
    load_tokenizer,
    read_metadata,
    resolve_model_source,
    size_on_disk,
)
from lmshrink.models.sources import check_custom_settings, with_saved_task


@dataclasses.dataclass
class ServedModel:
    """One model as served: where it is, how it runs, and what it costs to store."""

    name: str
    path: str
    kind: str  # torch-fp32, torch-int8, onnx-fp32, onnx-int8
    model: Any
    tokenizer: Any
    parameters: int
    parameters_source: str
    size_bytes: int  # the weights as served (torch-int8: its int8 state serialized)
    disk_bytes: int  # weight files in the folder


def model_kind(arg: str) -> tuple[str, str]:
    """(kind, folder) of a model argument: "onnx", "torch-int8" or "torch-fp32" (a model
    folder, or a run folder holding model/); a clear error for anything else."""
    path = Path(arg).expanduser()
    if not path.exists():
        raise ModelError(
            f"{path}: model folder does not exist; pass a folder written by lmshrink "
            "finetune, distill, export or quantize."
        )
    if not path.is_dir():
        raise ModelError(f"{path}: is a file, not a model folder; pass the folder holding it.")
    if (path / MODEL_FILE).is_file():
        return "onnx", str(path)
    if (path / QUANT_FILE).is_file():
        return "torch-int8", str(path)
    if (path / RESULT_FILE).is_file():
        inside = ", ".join(str(p) for p in sorted(path.iterdir()) if p.is_dir())
        raise ModelError(
            f"{path}: is the output of lmshrink quantize, which holds several models; pass "
            f"the ones to bench: {inside}."
        )
    try:
        return "torch-fp32", resolve_model_source(str(path))
    except ModelError:
        raise ModelError(
            f"{path}: neither a model folder (config.json), a run folder (model/), an ONNX "
            f"folder (model.onnx) nor a torch-int8 folder (quantization.json); pass a folder "
            "written by lmshrink finetune, distill, export or quantize."
        ) from None


def saved_task(folder: str) -> str:
    """The task a model folder was made for (lmshrink.json, or export.json for ONNX), or ""."""
    task = read_metadata(folder).get("task", "")
    export = Path(folder) / EXPORT_FILE
    if not task and export.is_file():
        task = json.loads(export.read_text()).get("task", "")
    return task


def task_data(data: DataConfig, folders: list[str]) -> DataConfig:
    """The data settings of models compared together: the user's settings, those not given
    filled from the first model that saved its task (`models.sources.with_saved_task`:
    flags win field by field; with --task nothing is taken); every model that names its task
    must name the same one."""
    given, source = data, ""
    for folder in folders:
        if data.task:
            break
        source = folder
        data = with_saved_task(data, folder)
        if not data.task and saved_task(folder):
            data = dataclasses.replace(data, task=saved_task(folder))
    check_custom_settings(given, data, source)
    if not data.task:
        raise ConfigError(
            "no task given and none saved with the models; pass --task (a GLUE name, or "
            "custom with --dev-file and --text-columns)."
        )
    for folder in folders:
        made_for = saved_task(folder)
        if made_for and made_for != data.task:
            raise ConfigError(
                f"{folder}: this model was made for task {made_for}, not {data.task}; bench "
                "models of one task together."
            )
    return data


def load_served(name: str, kind: str, folder: str, task: Task) -> ServedModel:
    """Load one model the way it is served (see `model_kind` for the kinds)."""
    disk = size_on_disk(folder)
    if kind == "onnx":
        meta = json.loads((Path(folder) / EXPORT_FILE).read_text())
        labels = meta.get("labels", [])
        if labels and len(labels) != task.num_labels:
            raise ModelError(
                f"{folder}: the ONNX model has {len(labels)} output(s) but task {task.name} "
                f"needs {task.num_labels}; bench it with the task it was exported for."
            )
        weights = "int8" if str(meta.get("weights", "")).startswith("int8") else "fp32"
        return ServedModel(
            name,
            folder,
            f"onnx-{weights}",
            OnnxClassifier.from_folder(folder),
            load_tokenizer(folder),
            onnx_parameters(Path(folder) / MODEL_FILE),
            "onnx initializers",
            disk,
            disk,
        )
    tokenizer, model = load_for_eval(folder, task)  # also checks the head against the task
    parameters = count_parameters(model)
    if kind == "torch-int8":
        model = load_quantized(folder)
        return ServedModel(
            name,
            folder,
            kind,
            model,
            tokenizer,
            parameters,
            "torch (before int8)",
            serialized_bytes(model),
            disk,
        )
    return ServedModel(name, folder, kind, model, tokenizer, parameters, "torch", disk, disk)
