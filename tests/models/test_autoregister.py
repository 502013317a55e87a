"""lmshrink's model classes reach the Auto API whatever the import order, or say why not."""

import subprocess
import sys

import pytest

ORDERS = {
    "lmshrink first": "import lmshrink; "
    "from transformers import AutoModelForSequenceClassification",
    "transformers first": "from transformers import AutoModelForSequenceClassification; "
    "import lmshrink",
    "torch and bert config first": "import torch, lmshrink; "
    "from transformers import BertConfig; "
    "from transformers import AutoModelForSequenceClassification",
}


@pytest.mark.parametrize("order", list(ORDERS))
def test_registration_survives_import_order(order):
    code = (
        ORDERS[order] + "; from transformers import CONFIG_MAPPING; "
        "print(sorted(k for k in CONFIG_MAPPING if k.startswith('lmshrink')))"
    )
    proc = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", code], capture_output=True, text=True
    )
    assert (
        proc.stdout.strip() == "['lmshrink_bilstm', 'lmshrink_pruned_bert', 'lmshrink_static']"
    ), proc.stderr


def test_a_failing_registration_is_retried_and_warned(monkeypatch):
    from lmshrink.models import autoregister as _autoregister

    monkeypatch.setattr(_autoregister, "REGISTRATIONS", ["lmshrink.no_such_module:register"])
    monkeypatch.setattr(_autoregister, "_done", False)
    with pytest.warns(RuntimeWarning, match="no_such_module"):
        _autoregister.register_all()
    assert _autoregister._done is False  # the next call tries again


def test_a_saved_bilstm_tagger_loads_with_the_token_auto_class_after_import(tmp_path):
    """The user's path: a fresh interpreter, `import lmshrink`, then transformers' Auto class."""
    from lmshrink.models.bilstm import BiLSTMConfig, BiLSTMForTokenClassification

    config = BiLSTMConfig(vocab_size=12, embedding_dim=4, hidden_size=3, num_labels=5, shape_dim=2)
    BiLSTMForTokenClassification(config).save_pretrained(tmp_path)
    code = (
        "import lmshrink, torch; from transformers import AutoModelForTokenClassification; "
        f"m = AutoModelForTokenClassification.from_pretrained({str(tmp_path)!r}); "
        "ids = torch.tensor([[2, 5, 7]]); "
        "out = m(input_ids=ids, word_shape_ids=torch.tensor([[0, 2, 0]])); "
        "print(type(m).__name__, tuple(out.logits.shape))"
    )
    proc = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", code], capture_output=True, text=True
    )
    assert proc.stdout.strip() == "BiLSTMForTokenClassification (1, 3, 5)", proc.stderr
