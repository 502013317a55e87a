"""The training-time model of a BERT-of-Theseus student (Xu et al., 2020): the successor
layers and, in their place while being replaced, the teacher's frozen layers.

The teacher (the *predecessor*) has L layers, split into k groups of L / k consecutive layers;
successor layer j stands in for predecessor group j. During training every group is
replaced by its successor layer with probability

    p(t) = min(1, replace_start + (1 - replace_start) * t / replace_steps)

where t counts the model's training forwards, so the successor layers first learn to work
inside the frozen predecessor and, once p reaches 1, train alone. Embeddings, pooler and
classifier are the successor's and serve both paths. In eval mode, and at p = 1, only the
successor runs: it is the model that is scored and saved, a stock transformers folder
(DESIGN.md, convention 6). The student family that builds it is
`lmshrink.students.theseus`.
"""

from __future__ import annotations

import random
from typing import Any

import torch
from torch import nn

from lmshrink.errors import ConfigError
from lmshrink.models.head_loss import sequence_classification_loss


class TheseusModel(nn.Module):
    """A successor model that, in training mode, runs some predecessor groups in place of
    its own layers (module replacing); in eval mode it is exactly the successor.

    What the rest of lmshrink sees is the successor's: `config`, `parameters()`,
    `named_modules()` (value probes, attention settings), and `state_dict()`, which holds
    the successor's tensors under `successor.` plus the schedule position `replace_step`.
    The predecessor's layers are deliberately *not* registered submodules (the pattern
    `Objective` uses for the teacher): they are frozen, so the optimiser, DDP, gradient
    clipping, parameter counts and checkpoints have nothing to do with them, and they are
    rebuilt from the teacher when a run resumes. `.to()`/`.cuda()` and `train()`/`eval()`
    still carry them along (`_apply`, `train`).
    """

    def __init__(
        self,
        successor: nn.Module,
        predecessor: nn.ModuleList,
        predecessor_config: Any,
        replace_start: float,
        replace_steps: int,
        seed: int,
        *,
        layer_path: str,
        layer_groups: list[tuple[str, list[nn.Module]]],
    ) -> None:
        """`layer_path` names the successor's layer list (e.g. "bert.encoder.layer");
        `layer_groups` are the successor's groups for gradual unfreezing, bottom-up."""
        super().__init__()
        self.successor = successor
        self._layer_path = layer_path
        successor_layers = successor.get_submodule(layer_path)
        self._groups = layer_groups  # a plain list: the modules are the successor's
        self._predecessor = [predecessor.requires_grad_(False)]  # a list: not registered
        # The config object the predecessor's attention modules read (its attention kind).
        self._predecessor_config = predecessor_config
        self.group_size = len(predecessor) // len(successor_layers)
        self.replace_start = replace_start
        self.replace_steps = replace_steps
        self.seed = seed
        # Training forwards so far: the schedule's t. A persistent buffer, so checkpoints
        # carry it and a resumed run continues the schedule (see _load_from_state_dict).
        self.register_buffer("replace_step", torch.zeros((), dtype=torch.long))

    # -- what the loop and the report read ------------------------------------------------

    @property
    def config(self) -> Any:
        """The successor's config (k layers): what layer maps and sizes are read from."""
        return self.successor.config

    @property
    def predecessor(self) -> nn.ModuleList:
        """The teacher's L layers (a frozen copy), in order."""
        return self._predecessor[0]

    @property
    def num_groups(self) -> int:
        return len(self.predecessor) // self.group_size

    def final_model(self) -> nn.Module:
        """The successor: the stock transformers model to score, count and save."""
        return self.successor

    def save_pretrained(self, path: Any, **kwargs: Any) -> None:
        """Save the successor alone, as a stock model folder."""
        self.successor.save_pretrained(path, **kwargs)

    def layer_groups(self) -> list[tuple[str, list[nn.Module]]]:
        """The successor's groups for gradual unfreezing, bottom-up."""
        return self._groups

    def set_attn_implementation(self, attn_implementation: str) -> None:
        """Switch both paths' attention kernel (e.g. to "eager" for attention maps)."""
        self.successor.set_attn_implementation(attn_implementation)
        self._predecessor_config._attn_implementation = self.config._attn_implementation

    # -- the schedule ------------------------------------------------------------------------

    def replace_probability(self, step: int | None = None) -> float:
        """p(step): rises linearly from replace_start at step 0 to 1 at replace_steps."""
        step = int(self.replace_step) if step is None else step
        rise = (1.0 - self.replace_start) * step / self.replace_steps
        return min(1.0, self.replace_start + rise)

    def replaced_groups(self, step: int) -> list[bool]:
        """For each group, whether its successor layer runs at training step `step`.

        The draws come from a generator seeded with (seed, step) alone, never from the
        global RNG: every data-parallel process draws the same groups (so DDP sees the same
        graph everywhere), a resumed run repeats the draws of an uninterrupted one, and
        dropout's random stream is left as it would be without replacing.
        """
        p = self.replace_probability(step)
        if p >= 1.0:
            return [True] * self.num_groups
        rng = random.Random(f"theseus/{self.seed}/{step}")
        return [rng.random() < p for _ in range(self.num_groups)]

    # -- forward -----------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Like the successor's forward: input_ids/attention_mask/token_type_ids [B, T]
        -> SequenceClassifierOutput(loss, logits [B, C], hidden_states: k + 1 of [B, T, H]).

        Eval mode runs the successor alone. Each training-mode call is one step of the
        schedule: it draws the replaced groups, and when every group is replaced (always,
        once p = 1) it too runs the successor alone (its stock forward); otherwise the
        mixed path (`forward_groups`).
        """
        inputs = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": token_type_ids,
            "labels": labels,
        }
        if self.training:
            step = int(self.replace_step)
            with torch.no_grad():
                self.replace_step.add_(1)
            replaced = self.replaced_groups(step)
            if not all(replaced):
                extra = sorted(k for k, v in kwargs.items() if v is not None and v is not False)
                if extra:
                    raise TypeError(f"TheseusModel.forward does not take {', '.join(extra)}.")
                if output_attentions:
                    raise ConfigError(
                        "student 'theseus': attention maps exist only once every module is "
                        f"replaced (training step {self.replace_steps} and later), not while "
                        "predecessor layers run; use attention and value losses in a stage "
                        "after replace_steps, or none."
                    )
                return self.forward_groups(replaced, output_hidden_states, **inputs)
        return self.successor(
            **inputs,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            **kwargs,
        )

    def forward_groups(
        self,
        replaced: list[bool],
        output_hidden_states: bool = False,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> Any:
        """The mixed model: the successor's embeddings; per group j, successor layer j if
        `replaced[j]`, else predecessor layers j*g ... (j+1)*g - 1 in turn; the successor's
        head. Hidden states are the embeddings and each group's output (k + 1 of [B, T, H]),
        so a layer map over the successor's k layers reads the same positions on any path.
        The attention mask is built as the installed transformers' encoders build it, once
        per attention kind (the two paths may use different kernels).
        """
        from transformers.masking_utils import create_bidirectional_mask
        from transformers.modeling_outputs import SequenceClassifierOutput

        if input_ids is None:
            raise TypeError("TheseusModel needs input_ids while modules are being replaced.")
        if len(replaced) != self.num_groups:
            raise ValueError(f"replaced has {len(replaced)} entries for {self.num_groups} groups.")
        successor = self.successor
        embedded = successor.base_model.embeddings(
            input_ids=input_ids, token_type_ids=token_type_ids
        )  # [B, T, H]
        masks: dict[Any, Any] = {}

        def mask_for(config: Any) -> Any:  # [B, 1, T, T] (bool or additive float) or None
            kind = config._attn_implementation
            if kind not in masks:
                masks[kind] = create_bidirectional_mask(
                    config=config, inputs_embeds=embedded, attention_mask=attention_mask
                )
            return masks[kind]

        layers = successor.get_submodule(self._layer_path)
        g = self.group_size
        hidden, states = embedded, [embedded]
        for j, use_successor in enumerate(replaced):
            if use_successor:
                modules, config = [layers[j]], successor.config
            else:
                modules, config = self.predecessor[j * g : (j + 1) * g], self._predecessor_config
            for layer in modules:
                hidden = layer(hidden, mask_for(config))  # [B, T, H]
                if isinstance(hidden, tuple):  # families whose layers return (states, ...)
                    hidden = hidden[0]
            states.append(hidden)
        logits = self._head(hidden)  # [B, C]
        loss = None if labels is None else sequence_classification_loss(logits, labels, self.config)
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=tuple(states) if output_hidden_states else None
        )

    def _head(self, sequence: torch.Tensor) -> torch.Tensor:
        """The successor's head on the last hidden states [B, T, H] -> logits [B, C]: BERT
        pools the [CLS] state (pooler, dropout, classifier); RoBERTa-style heads read the
        sequence themselves."""
        successor = self.successor
        pooler = getattr(successor.base_model, "pooler", None)
        if pooler is not None:
            return successor.classifier(successor.dropout(pooler(sequence)))
        return successor.classifier(sequence)

    # -- module plumbing for the unregistered predecessor --------------------------------------

    def train(self, mode: bool = True) -> TheseusModel:
        super().train(mode)
        self.predecessor.train(mode)  # dropout in the predecessor follows the model's mode
        return self

    def _apply(self, fn: Any, recurse: bool = True) -> TheseusModel:
        # .to(), .cuda(), .half() ... reach modules through _apply: carry the predecessor.
        self.predecessor._apply(fn, recurse)
        return super()._apply(fn, recurse)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        """Loading never moves the schedule back: `replace_step` becomes the larger of the
        loaded and the current one. A fresh model (step 0) takes the checkpoint's step, so a
        resumed run continues the schedule; a model that restores its best weights at the
        end of a stage keeps its place, so the next stage does not replay the ramp."""
        key = prefix + "replace_step"
        if key in state_dict:  # `state_dict` is load_state_dict's own copy
            loaded = torch.as_tensor(state_dict[key]).to(self.replace_step.device)
            state_dict[key] = torch.maximum(loaded, self.replace_step)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return (
            f"predecessor: {len(self.predecessor)} frozen layers in {self.num_groups} groups, "
            f"replace_start={self.replace_start}, replace_steps={self.replace_steps}, "
            f"seed={self.seed}"
        )
