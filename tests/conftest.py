"""Shared fixtures: a tiny random BERT encoder and small task files made by the tests.

Nothing here touches the network: the hub is switched to offline mode before any Hugging
Face library is imported.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models gain nothing from intra-op threads, and one thread per process keeps the
# subprocess tests (resume, 2-process runs) from oversubscribing a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED_GLUE = Path(
    os.environ.get(
        "LMSHRINK_GLUE_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
    )
)

SHARED_NER = Path(
    os.environ.get(
        "LMSHRINK_NER_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "ner"
    )
)

# GLUE's STS-B columns (the score is the last one).
STSB_HEADER = [
    "index",
    "genre",
    "filename",
    "year",
    "old_index",
    "source1",
    "source2",
    "sentence1",
    "sentence2",
    "score",
]

POSITIVE = ["good", "great", "fine", "lovely", "superb", "charming"]
NEGATIVE = ["bad", "awful", "dull", "boring", "terrible", "weak"]
FILLER = [
    "the",
    "a",
    "movie",
    "film",
    "plot",
    "was",
    "is",
    "very",
    "quite",
    "story",
    "and",
    "acting",
    "really",
    "it",
    "this",
    "cast",
]


def make_sentences(n: int, seed: int) -> list[tuple[str, str]]:
    """(sentence, label) pairs whose label is learnable from one sentiment word."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randint(0, 1)
        words = rng.sample(FILLER, 4) + [rng.choice(POSITIVE if label else NEGATIVE)]
        rng.shuffle(words)
        rows.append((" ".join(words), str(label)))
    return rows


def free_port() -> int:
    """A TCP port free on this machine now, for a test's torch.distributed rendezvous: tests
    run side by side (pytest-xdist), so none may take a fixed port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_tsv(path: Path, header: list[str] | None, rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (["\t".join(header)] if header else []) + ["\t".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_bert_config(**overrides):
    """The tests' one tiny BERT shape (hidden 32, 2 layers, 2 heads, FFN 64), with overrides;
    pass `vocab_size` for a model that reads a real tokenizer."""
    from transformers import BertConfig

    settings = dict(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    settings.update(overrides)
    return BertConfig(**settings)


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    """A folder with a 2-layer, hidden-32 random BERT encoder (no head) and its tokenizer."""
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny-bert"))


def build_tiny_encoder(folder: Path) -> Path:
    import torch
    from transformers import BertModel, BertTokenizer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = sorted(
        set(
            POSITIVE
            + NEGATIVE
            + FILLER
            + ["not", "entailment", "he", "she", "yes", "no", "cat", "dog", "sat", "on", "mat"]
        )
    )
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list(".,!?'-0123456789")
    vocab = specials + words + letters + ["##" + c for c in letters]
    # transformers 5 takes the vocabulary itself (`vocab_file=` is silently ignored there).
    tokenizer = BertTokenizer(vocab={tok: i for i, tok in enumerate(vocab)}, do_lower_case=True)
    torch.manual_seed(0)
    config = tiny_bert_config(vocab_size=len(vocab))
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def sst2_dir(tmp_path) -> Path:
    """A small GLUE folder holding SST-2 train (160 rows) and dev (48 rows)."""
    root = tmp_path / "glue"
    train = make_sentences(160, seed=1)
    dev = make_sentences(48, seed=2)
    write_tsv(root / "SST-2" / "train.tsv", ["sentence", "label"], [list(r) for r in train])
    write_tsv(root / "SST-2" / "dev.tsv", ["sentence", "label"], [list(r) for r in dev])
    return root


@pytest.fixture
def shared_glue() -> Path:
    """The real GLUE files in ../shared/data/glue (skipped where they are absent)."""
    if not SHARED_GLUE.is_dir():
        pytest.skip(f"real GLUE data not found at {SHARED_GLUE} (set LMSHRINK_GLUE_DIR)")
    return SHARED_GLUE


@pytest.fixture
def shared_ner() -> Path:
    """The real NER files in ../shared/data/ner (skipped where they are absent)."""
    if not SHARED_NER.is_dir():
        pytest.skip(f"real NER data not found at {SHARED_NER} (set LMSHRINK_NER_DIR)")
    return SHARED_NER


def tiny_finetune_config(model: Path, data_dir: Path, out: Path, seed: int = 42, **train):
    """A FinetuneConfig for a few fast steps on the tiny model."""
    from lmshrink.config import DataConfig, TrainConfig
    from lmshrink.finetune import FinetuneConfig

    # A random tiny BERT needs ~30 steps at a high rate before the sentiment word takes hold.
    settings = dict(epochs=2, batch_size=16, lr=4e-3, eval_batch_size=32)
    settings.update(train)
    return FinetuneConfig(
        model=str(model),
        out=str(out),
        seed=seed,
        progress=False,
        data=DataConfig(task="sst2", data_dir=str(data_dir), max_length=32),
        train=TrainConfig(**settings),
    )


# A short stage schedule for runs whose result matters less than their being complete.
QUICK_STAGES = [
    {
        "name": "representation",
        "data": "transfer",
        "losses": [{"name": "representation"}],
        "epochs": 1,
        "lr": 3e-3,
        "batch_size": 16,
    },
    {
        "name": "logits",
        "data": "transfer",
        "losses": [{"name": "logit_mse"}],
        "epochs": 3,
        "lr": 5e-3,
        "batch_size": 16,
    },
]


@pytest.fixture(scope="session")
def tiny_teacher(tiny_encoder, tmp_path_factory) -> dict[str, Path]:
    """The tests' one fine-tuned tiny SST-2 teacher (5 epochs on 160 rows), made once per
    session; keys: teacher, glue (its GLUE folder: train 160, dev 48 rows), transfer (240
    unlabeled sentences). Tests must not write into these folders."""
    from lmshrink.finetune import finetune

    root = tmp_path_factory.mktemp("tiny-teacher")
    glue = root / "glue"
    for split, n, seed in (("train", 160, 1), ("dev", 48, 2)):
        rows = [list(r) for r in make_sentences(n, seed=seed)]
        write_tsv(glue / "SST-2" / f"{split}.tsv", ["sentence", "label"], rows)
    finetune(tiny_finetune_config(tiny_encoder, glue, root / "teacher", epochs=5))
    transfer = root / "unlabeled.txt"
    transfer.write_text("\n".join(s for s, _ in make_sentences(240, seed=9)) + "\n")
    return {"teacher": root / "teacher", "glue": glue, "transfer": transfer}


@pytest.fixture(scope="session")
def distilled_run(tiny_teacher, tmp_path_factory) -> dict[str, Path]:
    """A complete distill run (BiLSTM student, report.json, model/) from the tiny teacher;
    keys: teacher, run, glue. Shared by the bench and report tests."""
    from lmshrink.config import from_dict
    from lmshrink.distill import DistillConfig, distill

    root = tmp_path_factory.mktemp("distilled")
    glue, transfer = tiny_teacher["glue"], tiny_teacher["transfer"]
    raw = {
        "teacher": str(tiny_teacher["teacher"]),
        "out": str(root / "run"),
        "progress": False,
        "measure_speed": True,
        "data": {"task": "sst2", "data_dir": str(glue), "max_length": 32},
        "transfer": {"files": [str(transfer)], "min_words": 1},
        "student": {"embedding_dim": 16, "hidden_size": 16},
        "stages": QUICK_STAGES,
    }
    distill(from_dict(DistillConfig, raw))
    return {"teacher": tiny_teacher["teacher"], "run": root / "run", "glue": glue}
