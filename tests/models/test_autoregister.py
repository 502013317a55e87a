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
    assert proc.stdout.strip() == "['lmshrink_bilstm', 'lmshrink_pruned_bert']", proc.stderr


def test_a_failing_registration_is_retried_and_warned(monkeypatch):
    from lmshrink.models import autoregister as _autoregister

    monkeypatch.setattr(_autoregister, "REGISTRATIONS", ["lmshrink.no_such_module:register"])
    monkeypatch.setattr(_autoregister, "_done", False)
    with pytest.warns(RuntimeWarning, match="no_such_module"):
        _autoregister.register_all()
    assert _autoregister._done is False  # the next call tries again
