"""`lmshrink prune`: structured pruning of a BERT-family classifier (BERT, MiniLM, RoBERTa,
XLM-R), with distillation recovery.

Attention heads and FFN neurons are removed from the weight matrices (the result is a
`PrunedBertForSequenceClassification`, see `lmshrink.models.pruned_bert`), so the model is
really smaller and faster, and loads with `AutoModelForSequenceClassification.from_pretrained`.

**Importance**, estimated on the task's training data with the model's own task loss:
- a head's importance is `|dL/dg_h|` for a gate `g_h = 1` multiplied into its context vector
  (Michel et al., 2019); a neuron's is `|dL/dm_i|` for a gate multiplied into its activation,
  which is the first-order Taylor criterion `|sum over tokens of a_i * dL/da_i|`
  (Molchanov et al., 2017). The absolute value is taken per batch and summed over batches.
- Scores are normalised per layer (divided by the L2 norm of the layer's head scores, and
  of its neuron scores), as Michel et al. do for heads, so layers whose gradients are larger
  overall do not lose everything elsewhere; units are then ranked across all layers.
- A layer's importance is the sum of its raw (unnormalised) head and neuron scores; it is
  reported, and a layer goes as a whole when all its heads and neurons are pruned.

**What is kept.** For a target share `s` of the unpruned encoder parameters, heads and
neurons keep the same share `f` of their original numbers (each chosen globally by normalised
score), with `f` set so that the layers' unprunable parameters (LayerNorms, output biases)
plus the kept heads and neurons fit in `s` (rounded down, so the target is never exceeded).

**Schedule.** `steps` steps lower the kept share linearly from 1 to `target_params`; each
step re-estimates importance on the current model, prunes, then recovers for
`recovery_steps` steps by distillation from the unpruned model: soft KL on logits (MSE on
scores for regression) plus MSE between all hidden states (same width and depth, so no
projections). The recovery after the last step is the final recovery phase
(`final_recovery_steps`, when set). With `target_speedup`, each step instead shrinks the share
by `(1/target)^(1/steps)`, and the speed ratio at batch 32 is measured right after pruning, as
for the report (speed depends on the shapes only, not on the weights); the step that reaches
the target (or the `3 * steps`-th, or one leaving nothing prunable) is the last. Speed ratios
are against the model as loaded (its own stock class, e.g. `BertForSequenceClassification`),
timed interleaved in one process.

**Encoder sparsity** (in the report): the share of encoder parameters removed, where encoder
parameters are all parameters of the transformer layers (attention query/key/value/output and
FFN weights and biases, and the layers' LayerNorms), excluding embeddings, pooler and
classifier. `target_params` counts the same parameters.

Output folder (`--out`): a stock model folder (weights, config, tokenizer), `lmshrink.json`,
`config.yaml`, and `prune.json` (the report).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import random
import time
from typing import Any

from lmshrink import __version__
from lmshrink.config import DataConfig, TrainConfig, dump_yaml, option, to_dict
from lmshrink.data.batching import Encoded, bucketed_batches, collate, encode
from lmshrink.data.splits import load_eval_splits, read_split, resolve_task
from lmshrink.errors import ConfigError
from lmshrink.measure import metrics
from lmshrink.models.loading import (
    METADATA_FILE,
    count_parameters,
    load_for_eval,
    resolve_model_source,
)
from lmshrink.runs import check_out, staged_output

REPORT_FILE = "prune.json"
SPARSITY_DEFINITION = (
    "share of encoder parameters removed; encoder parameters are all parameters of the "
    "transformer layers (attention query/key/value/output and FFN weights and biases, and "
    "the layers' LayerNorms), excluding embeddings and the classification head (BERT's pooler "
    "and classifier, RoBERTa's dense and out_proj)"
)
# The stock classifiers pruning starts from, by class name, and their `PrunedBertConfig.family`.
SOURCES = {
    "BertForSequenceClassification": "bert",
    "RobertaForSequenceClassification": "roberta",
    "XLMRobertaForSequenceClassification": "roberta",
}
# RoBERTa's state keys -> the pruned model's (BERT's names; see lmshrink.models.pruned_bert).
ROBERTA_KEYS = {
    "roberta.": "bert.",
    "classifier.dense.": "bert.pooler.dense.",
    "classifier.out_proj.": "classifier.",
}


@dataclasses.dataclass
class PruneConfig:
    """`lmshrink prune`: remove attention heads and FFN neurons, recovering by distillation."""

    model: str = option(
        "", "fine-tuned BERT-family model folder (or run folder holding model/).", positional=True
    )
    out: str = option("", "output folder: the pruned model, its tokenizer and prune.json.")
    overwrite: bool = option(False, "replace --out if it already holds another run.")
    target_params: float = option(
        0.0, "share of encoder parameters to keep, e.g. 0.4 (0: use --target-speedup)."
    )
    target_speedup: float = option(
        0.0, "speed ratio vs the unpruned model at batch 32 to reach, e.g. 3 (0: off)."
    )
    steps: int = option(3, "pruning steps (each: importance, prune, recover).")
    recovery_steps: int = option(200, "distillation steps after each pruning step.")
    final_recovery_steps: int = option(
        0, "distillation steps after the last pruning step (0: as --recovery-steps)."
    )
    lr: float = option(5e-5, "peak learning rate of the recovery distillation (AdamW).")
    hidden_weight: float = option(1.0, "weight of the hidden-state MSE beside the logit loss.")
    batch_size: int = option(32, "batch size of importance estimation and recovery.")
    importance_examples: int = option(512, "training examples used to estimate importance.")
    eval_batch_size: int = option(128, "evaluation batch size.")
    speed_examples: int = option(256, "dev examples per timing round at each batch size.")
    rounds: int = option(
        3, "timing rounds of each speed measurement (models take turns; median kept)."
    )
    seed: int = option(42, "random seed for data order and subsets.")
    progress: bool = option(True, "show progress messages.")
    data: DataConfig = dataclasses.field(default_factory=DataConfig)


# --- conversion ---------------------------------------------------------------------------


def check_prunable(model: Any, source: str = "the model") -> None:
    """Raise ConfigError unless `model` is a BERT-family classifier that can be pruned."""
    from lmshrink.models.pruned_bert import MODEL_TYPE

    model_type = getattr(model.config, "model_type", "?")
    if model_type == MODEL_TYPE:
        return
    if type(model).__name__ in SOURCES:
        if model.config.is_decoder or model.config.add_cross_attention:
            raise ConfigError(f"{source}: pruning supports encoders, not '{model_type}' decoders.")
        return
    what = "a BiLSTM student" if model_type == "lmshrink_bilstm" else f"a '{model_type}' model"
    raise ConfigError(
        f"{source}: pruning supports BERT-family encoders (BERT, MiniLM, RoBERTa, XLM-R) with a "
        f"classification head, but this is {what}; use distill with a smaller student instead."
    )


def from_bert(model: Any) -> Any:
    """A `PrunedBertForSequenceClassification` with nothing removed, computing the same
    logits as the given BERT, RoBERTa or XLM-R classifier (same weights; BERT's state keys,
    RoBERTa's renamed as `ROBERTA_KEYS` says)."""
    from lmshrink.models.pruned_bert import (
        MODEL_TYPE,
        PrunedBertConfig,
        PrunedBertForSequenceClassification,
    )

    check_prunable(model)
    if model.config.model_type == MODEL_TYPE:
        return model
    family = SOURCES[type(model).__name__]
    skip = ("model_type", "architectures", "transformers_version")
    settings = {k: v for k, v in model.config.to_dict().items() if k not in skip}
    config = PrunedBertConfig(**settings, family=family)
    config._attn_implementation = model.config._attn_implementation  # same kernel, same logits
    pruned = PrunedBertForSequenceClassification(config)
    state = model.state_dict()
    if family == "roberta":
        state = {_renamed(key, ROBERTA_KEYS): value for key, value in state.items()}
    pruned.load_state_dict(state, strict=True)
    pruned.to(next(model.parameters()).dtype)
    return pruned.train(model.training)


def _renamed(key: str, prefixes: dict[str, str]) -> str:
    """`key` with the first matching prefix of `prefixes` replaced."""
    for old, new in prefixes.items():
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def encoder_parameters(model: Any) -> int:
    """Parameters of the transformer layers (see SPARSITY_DEFINITION)."""
    return count_parameters(model.base_model.encoder)


# --- importance ---------------------------------------------------------------------------


@dataclasses.dataclass
class Importance:
    """Raw importance scores: `heads[l]` [h_l], `neurons[l]` [I_l] (see the module doc)."""

    heads: list[Any]
    neurons: list[Any]

    def layers(self) -> list[float]:
        """A layer's importance: the sum of its raw head and neuron scores."""
        return [float(h.sum() + n.sum()) for h, n in zip(self.heads, self.neurons, strict=True)]


def compute_importance(model: Any, enc: Encoded, batch_size: int, limit: int) -> Importance:
    """|dL/d gate| of every head and FFN neuron, summed over batches of the first `limit`
    examples of `enc` (which must have labels); dropout is off so the estimate is stable."""
    import torch

    was_training = model.training
    model.eval()
    head_gates = [
        torch.ones(layer.attention.self.num_heads, requires_grad=True) for layer in model.layers
    ]
    neuron_gates = [torch.ones(layer.ffn_size, requires_grad=True) for layer in model.layers]
    gates = head_gates + neuron_gates
    totals = [torch.zeros_like(g) for g in gates]
    n = min(limit, len(enc))
    for lo in range(0, n, batch_size):
        batch = collate(enc, list(range(lo, min(n, lo + batch_size))))
        loss = model(**batch, head_mask=head_gates, neuron_mask=neuron_gates).loss
        grads = torch.autograd.grad(loss, gates, allow_unused=True)  # unused: 0-size layers
        for total, grad in zip(totals, grads, strict=True):
            if grad is not None:
                total += grad.abs()
    model.train(was_training)
    L = len(head_gates)
    return Importance(heads=totals[:L], neurons=totals[L:])


def normalise_per_layer(scores: list[Any]) -> list[Any]:
    """Each layer's scores [n_l] divided by their L2 norm (Michel et al., 2019)."""
    return [s / (s.norm(p=2) + 1e-20) for s in scores]


# --- choosing and slicing -----------------------------------------------------------------


def unit_costs(config: Any) -> tuple[int, int, int]:
    """(parameters per head, per FFN neuron, fixed per layer) of a BERT layer."""
    H, d = config.hidden_size, config.hidden_size // config.num_attention_heads
    head = 4 * H * d + 3 * d  # q/k/v rows and biases, output-projection columns
    neuron = 2 * H + 1  # intermediate row and bias, output column
    fixed = 6 * H  # two output biases and two LayerNorms (weight and bias)
    return head, neuron, fixed


def choose_keep(
    model: Any, importance: Importance, budget: int
) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """Heads and neurons to keep so that the encoder has at most `budget` parameters.

    Heads and neurons keep the same share `f` of the unpruned model's numbers
    (`config.num_attention_heads`, `config.intermediate_size` per layer), each chosen
    globally by per-layer-normalised score among the units the model still has.
    """
    import torch

    config = model.config
    L = config.num_hidden_layers
    head_cost, neuron_cost, fixed = unit_costs(config)
    all_heads, all_neurons = L * config.num_attention_heads, L * config.intermediate_size
    prunable = all_heads * head_cost + all_neurons * neuron_cost
    if budget < L * fixed:
        raise ConfigError(
            f"the target keeps {budget} encoder parameters, fewer than the {L * fixed} of the "
            "LayerNorms and output biases that pruning cannot remove; choose a larger target."
        )
    share = min(1.0, (budget - L * fixed) / prunable)

    def top(scores: list[Any], count: int) -> dict[int, list[int]]:
        flat = torch.cat([s.detach().float() for s in scores])  # [units]
        owner = [(layer, i) for layer, s in enumerate(scores) for i in range(len(s))]
        count = min(count, len(owner))
        # Stable sort by descending score: ties keep the lower layer and index.
        order = sorted(range(len(owner)), key=lambda u: -float(flat[u]))[:count]
        keep: dict[int, list[int]] = {layer: [] for layer in range(L)}
        for u in order:
            keep[owner[u][0]].append(owner[u][1])
        return {layer: sorted(ids) for layer, ids in keep.items()}

    heads = top(normalise_per_layer(importance.heads), math.floor(share * all_heads))
    neurons = top(normalise_per_layer(importance.neurons), math.floor(share * all_neurons))
    return heads, neurons


def prune_to(model: Any, head_keep: dict[int, list[int]], neuron_keep: dict[int, list[int]]) -> Any:
    """A new, physically smaller model keeping, in layer l, the heads `head_keep[l]` and the
    FFN neurons `neuron_keep[l]` (indices into the model's current heads and neurons; a layer
    not in a dict keeps all of them). The result computes what `model` computes with the
    other heads and neurons gated to 0."""
    import torch

    from lmshrink.models.pruned_bert import PrunedBertForSequenceClassification

    model = from_bert(model)
    config = copy.deepcopy(model.config)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    d = config.head_dim
    for layer_id, layer in enumerate(model.layers):
        heads = sorted(head_keep.get(layer_id, range(layer.attention.self.num_heads)))
        neurons = sorted(neuron_keep.get(layer_id, range(layer.ffn_size)))
        if len(set(heads)) != len(heads) or any(
            not 0 <= h < layer.attention.self.num_heads for h in heads
        ):
            raise ValueError(f"layer {layer_id}: head indices {heads} are not distinct heads.")
        if len(set(neurons)) != len(neurons) or any(not 0 <= i < layer.ffn_size for i in neurons):
            raise ValueError(f"layer {layer_id}: neuron indices are not distinct neurons.")
        rows = torch.tensor([h * d + j for h in heads for j in range(d)], dtype=torch.long)
        cols = torch.tensor(neurons, dtype=torch.long)
        p = f"bert.encoder.layer.{layer_id}."
        for name in ("query", "key", "value"):
            for kind in ("weight", "bias"):
                key = f"{p}attention.self.{name}.{kind}"
                state[key] = state[key].index_select(0, rows)  # [h*d, H] / [h*d]
        key = f"{p}attention.output.dense.weight"
        state[key] = state[key].index_select(1, rows)  # [H, h*d]
        for kind in ("weight", "bias"):
            key = f"{p}intermediate.dense.{kind}"
            state[key] = state[key].index_select(0, cols)  # [I, H] / [I]
        key = f"{p}output.dense.weight"
        state[key] = state[key].index_select(1, cols)  # [H, I]
        config.heads_per_layer[layer_id] = len(heads)
        config.intermediate_per_layer[layer_id] = len(neurons)
    smaller = PrunedBertForSequenceClassification(config)
    smaller.load_state_dict(state, strict=True)
    smaller.to(next(model.parameters()).dtype)
    return smaller.train(model.training)


# --- recovery -----------------------------------------------------------------------------


def recover(
    student: Any,
    teacher: Any,
    enc: Encoded,
    cfg: PruneConfig,
    is_regression: bool,
    rng: random.Random,
    steps: int,
) -> float:
    """Distil `teacher` into `student` for `steps` steps (logit loss plus hidden-state MSE
    over all layers); returns the mean loss of the last steps."""
    import torch

    from lmshrink.distillation.losses import build_loss
    from lmshrink.errors import TrainingError
    from lmshrink.training.optim import build_optimizer

    if steps <= 0:
        return 0.0
    H, L = student.config.hidden_size, student.config.num_hidden_layers
    logit_loss = build_loss("score_mse" if is_regression else "soft_kl")
    pairs = [(i, i) for i in range(L + 1)]
    hidden_loss = build_loss("hidden_mse", student_dim=H, teacher_dim=H, pairs=pairs)
    train_cfg = TrainConfig(lr=cfg.lr, weight_decay=0.01, warmup_ratio=0.1)
    optimizer, scheduler = build_optimizer(student, train_cfg, steps)
    teacher.eval()
    student.train()
    losses: list[float] = []
    step = 0
    while step < steps:
        for indices in bucketed_batches(enc.lengths, cfg.batch_size, rng):
            batch = collate(enc, indices)
            batch.pop("labels", None)
            with torch.no_grad():
                target = teacher(**batch, output_hidden_states=True)
            out = student(**batch, output_hidden_states=True)
            loss = logit_loss(student_logits=out.logits, teacher_logits=target.logits)
            loss = loss + cfg.hidden_weight * hidden_loss(
                student_hidden_states=out.hidden_states,
                teacher_hidden_states=target.hidden_states,
                attention_mask=batch["attention_mask"],
            )
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"recovery loss became {loss.item()} at step {step + 1}; lower --lr "
                    "(nothing was written)."
                )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            step += 1
            if step == steps:
                break
    student.eval()
    tail = losses[-20:]
    return sum(tail) / len(tail)


# --- the workflow -------------------------------------------------------------------------


def _check_targets(cfg: PruneConfig) -> None:
    if (cfg.target_params > 0) == (cfg.target_speedup > 0):
        raise ConfigError(
            "give exactly one target: --target-params (share of encoder parameters to keep, "
            "e.g. 0.4) or --target-speedup (e.g. 3)."
        )
    if cfg.target_params and not 0 < cfg.target_params <= 1:
        raise ConfigError(f"--target-params must be in (0, 1], got {cfg.target_params}.")
    if cfg.target_speedup and cfg.target_speedup <= 1:
        raise ConfigError(f"--target-speedup must be above 1, got {cfg.target_speedup}.")
    if cfg.steps < 1:
        raise ConfigError(f"--steps must be at least 1, got {cfg.steps}.")


def prune(cfg: PruneConfig) -> dict[str, Any]:
    """Prune `cfg.model` towards the target with recovery; save it to `cfg.out` with the
    report (also returned)."""
    from lmshrink.evaluate import score_model, with_saved_task
    from lmshrink.measure.speed import measure_speed
    from lmshrink.models.loading import size_on_disk
    from lmshrink.training.optim import set_seed

    _check_targets(cfg)
    out = check_out(cfg.out, cfg.overwrite)
    folder = resolve_model_source(cfg.model)
    data_cfg = with_saved_task(cfg.data, folder)
    task = resolve_task(data_cfg)
    tokenizer, loaded = load_for_eval(folder, task)
    check_prunable(loaded, folder)
    set_seed(cfg.seed)
    reference = from_bert(loaded).eval()
    for param in reference.parameters():
        param.requires_grad_(False)
    train = read_split(task, "train", data_cfg).subset(data_cfg.max_train_samples, cfg.seed)
    enc = encode(tokenizer, train, data_cfg.max_length)
    devs = load_eval_splits(task, "dev", data_cfg, cfg.seed)
    dev_enc = encode(tokenizer, devs[0], data_cfg.max_length)
    rng = random.Random(cfg.seed)
    log = print if cfg.progress else (lambda *_: None)

    def dev_scores(model: Any) -> dict[str, float]:
        return score_model(model, tokenizer, task, devs, data_cfg.max_length, cfg.eval_batch_size)

    def speedup(model: Any, batch_sizes: tuple[int, ...] = (1, 32)) -> dict[str, Any]:
        limit = {1: min(cfg.speed_examples, 64 * cfg.rounds), 32: cfg.speed_examples}
        pair = {"unpruned": (loaded, dev_enc), "pruned": (model, dev_enc)}
        return measure_speed(pair, batch_sizes=batch_sizes, limit=limit, rounds=cfg.rounds)

    total = encoder_parameters(reference)
    student = copy.deepcopy(reference)
    for param in student.parameters():
        param.requires_grad_(True)
    history: list[dict[str, Any]] = []
    share, start = 1.0, time.perf_counter()
    max_steps = cfg.steps if cfg.target_params else 3 * cfg.steps
    # What pruning cannot remove (LayerNorms, output biases): a speed target never asks less.
    unprunable = reference.config.num_hidden_layers * unit_costs(reference.config)[2]
    for step in range(1, max_steps + 1):
        if cfg.target_params:
            share = 1.0 - (1.0 - cfg.target_params) * step / cfg.steps
            budget = math.floor(share * total)
        else:
            share *= (1.0 / cfg.target_speedup) ** (1.0 / cfg.steps)
            budget = max(math.floor(share * total), unprunable)
        importance = compute_importance(student, enc, cfg.batch_size, cfg.importance_examples)
        heads, neurons = choose_keep(student, importance, budget)
        student = prune_to(student, heads, neurons)
        entry: dict[str, Any] = {"step": step, "target_share": round(share, 4)}
        if cfg.target_speedup:
            entry["speedup_32"] = speedup(student, (32,))["ratio"]["pruned"]["32"]
        reached = cfg.target_speedup > 0 and entry["speedup_32"] >= cfg.target_speedup
        # Nothing left to remove: an unreachable speed target ends here.
        last = reached or step == max_steps or encoder_parameters(student) <= unprunable
        steps = (cfg.final_recovery_steps or cfg.recovery_steps) if last else cfg.recovery_steps
        loss = recover(student, reference, enc, cfg, task.is_regression, rng, steps)
        entry.update(
            encoder_parameters=encoder_parameters(student),
            heads_per_layer=list(student.config.heads_per_layer),
            intermediate_per_layer=list(student.config.intermediate_per_layer),
            layer_importance=importance.layers(),
            recovery_steps=steps,
            recovery_loss=loss,
            seconds=round(time.perf_counter() - start, 1),
        )
        history.append(entry)
        log(
            f"step {step}: {entry['encoder_parameters']} encoder parameters "
            f"({100 * entry['encoder_parameters'] / total:.1f}%), recovery loss {loss:.4f}"
        )
        if last:
            break

    scores = {"unpruned": dev_scores(reference), "pruned": dev_scores(student)}
    speed = speedup(student)
    kept = encoder_parameters(student)
    unpruned_score = metrics.task_score(scores["unpruned"])
    pruned_score = metrics.task_score(scores["pruned"])
    report: dict[str, Any] = {
        "lmshrink_version": __version__,
        "kind": "pruned",
        "task": task.name,
        "model": str(folder),
        "target": {"params": cfg.target_params or None, "speedup": cfg.target_speedup or None},
        "sparsity_definition": SPARSITY_DEFINITION,
        "encoder_parameters": {"unpruned": total, "pruned": kept},
        "encoder_sparsity": 1.0 - kept / total,
        "parameters": {
            "unpruned": count_parameters(reference),
            "pruned": count_parameters(student),
        },
        "heads_per_layer": list(student.config.heads_per_layer),
        "intermediate_per_layer": list(student.config.intermediate_per_layer),
        "speed": speed,
        "speedup": speed["ratio"]["pruned"],
        "dev": scores,
        "score": {"unpruned": unpruned_score, "pruned": pruned_score},
        "retention": pruned_score / unpruned_score if unpruned_score else None,
        "history": history,
        "config": to_dict(cfg),
    }
    if cfg.target_speedup:
        report["target_reached"] = speed["ratio"]["pruned"]["32"] >= cfg.target_speedup
    with staged_output(out) as stage:
        student.save_pretrained(stage)
        tokenizer.save_pretrained(stage)
        dump_yaml(cfg, stage / "config.yaml")
        report["size_bytes"] = {"unpruned": size_on_disk(folder), "pruned": size_on_disk(stage)}
        meta = {k: report[k] for k in ("lmshrink_version", "kind", "task", "model", "config")}
        meta.update(metrics=list(task.metrics), labels=list(task.labels), dev=scores["pruned"])
        (stage / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        (stage / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report
