"""The SFT and DPO objectives of the one training loop (gpt_dist.engine.trainer): data and loss.

Both read jsonl files (data.train, data.val), tokenize them through the chat template, report
what they dropped, and keep everything in memory (tens of thousands of samples are a few
hundred MB at most). The template's Jinja text is the stage's `chat_template`, which the
trainer saves into each checkpoint's metadata and the Hugging Face exporter writes out.

Batch geometry: a micro-batch is `train.micro_batch_size` rows of `train.seq_len` positions
(SFT) or that many preference pairs (DPO), and an optimizer step takes `train.global_batch_size`
rows or pairs, on any number of ranks. SFT's loss is summed over the assistant tokens, DPO's
over the pairs; the loop divides by the step's total (see gpt_dist.engine.objectives).
"""

from __future__ import annotations

import torch

from gpt_dist.config import Config
from gpt_dist.engine.distributed import DistInfo
from gpt_dist.engine.objectives import Counts, LossSum, trained_tokens, unpadded_tokens
from gpt_dist.finetune.chat_template import ChatTemplate, resolve_chat_template
from gpt_dist.finetune.data_report import DataReport
from gpt_dist.finetune.epoch_loader import EpochLoader, EvalBatches


class _ChatObjective:
    """What SFT and DPO share: the chat template (resolved once) and the jsonl sources."""

    def start(self, model, dist: DistInfo) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    val_perplexity = True  # SFT: the loss is the NLL of the assistant tokens

    def __init__(self):
        self.chat_template: str | None = None  # the Jinja source, once resolved
        self._template: ChatTemplate | None = None

    def template(self, cfg: Config, tokenizer) -> ChatTemplate:
        if self._template is None:
            source, origin = resolve_chat_template(cfg.finetune.chat_template, cfg.checkpoint.init_from)
            self._template = ChatTemplate(source, tokenizer, origin)
            self.chat_template = source
        return self._template

    def _sources(self, cfg: Config, split: str) -> list[tuple[str, float]]:
        if split == "train":
            return [(s.path, s.weight) for s in cfg.data.train]
        return [(cfg.data.val, 1.0)]


class SFT(_ChatObjective):
    """Supervised fine-tuning: next-token loss on assistant replies only, summed over those tokens."""

    def _samples(self, cfg: Config, dist: DistInfo, tokenizer, split: str):
        from gpt_dist.finetune.row_packing import pack_rows
        from gpt_dist.finetune.sft_data import load_sft_samples

        report = DataReport("sft", split)
        key = "data.train" if split == "train" else "data.val"
        samples = load_sft_samples(self._sources(cfg, split), self.template(cfg, tokenizer), cfg.seq_len,
                                   cfg.finetune.overlong, report, cfg.train.seed, key=key)
        rows = None
        # Validation is never packed: one sample per row keeps its units the samples themselves.
        if cfg.finetune.packing and samples and split == "train":
            rows = pack_rows([len(s) - 1 for s in samples], cfg.seq_len)
            positions = sum(len(s) - 1 for s in samples)
            report.extra.update(rows=len(rows), packing_efficiency=round(positions / (len(rows) * cfg.seq_len), 4))
        report.publish(cfg.run_dir, dist.is_main, cfg.finetune.max_bad_fraction)
        return samples, rows

    def _collate(self, cfg: Config, tokenizer, samples, rows):
        from gpt_dist.finetune.row_packing import packed_batch, padded_batch

        pad = tokenizer.eot_id
        if rows is None:
            return lambda idx: padded_batch([(samples[i].ids, samples[i].trained) for i in idx], cfg.seq_len, pad)
        return lambda idx: packed_batch([[(samples[j].ids, samples[j].trained) for j in rows[i]] for i in idx],
                                        cfg.seq_len, pad)

    def train_loader(self, cfg: Config, dist: DistInfo, tokenizer):
        samples, rows = self._samples(cfg, dist, tokenizer, "train")
        units = len(rows) if rows is not None else len(samples)
        return EpochLoader(units, self._collate(cfg, tokenizer, samples, rows), cfg.train.micro_batch_size,
                           dist.rank, dist.world_size, cfg.train.seed, "data.train (sft)")

    def val_loader(self, cfg: Config, dist: DistInfo, tokenizer):
        if not cfg.data.val:
            return None
        samples, rows = self._samples(cfg, dist, tokenizer, "val")
        units = len(rows) if rows is not None else len(samples)
        return EvalBatches(units, self._collate(cfg, tokenizer, samples, rows), cfg.train.micro_batch_size,
                           dist.rank, dist.world_size, cfg.eval.batches, "data.val (sft)")

    @staticmethod
    def _forward(model, batch, reduction: str):
        return model(batch["input_ids"], batch["labels"], reduction=reduction,
                     segment_ids=batch.get("segment_ids"), position_ids=batch.get("position_ids"))

    def count(self, batch):
        n = trained_tokens(batch)
        return Counts(n, unpadded_tokens(batch), n)

    def loss(self, model, batch):
        return LossSum(self._forward(model, batch, "sum"))

    def eval_loss(self, model, batch):
        return self._forward(model, batch, "sum"), trained_tokens(batch)


class DPO(_ChatObjective):
    """Direct preference optimisation against the frozen starting weights (see finetune.dpo)."""

    val_perplexity = False  # the DPO loss is not a per-token NLL

    def __init__(self, beta: float, nll_weight: float = 0.0):
        super().__init__()
        self.beta = beta
        self.nll_weight = nll_weight  # alpha of the chosen replies' NLL term (finetune.dpo_nll_weight)
        self._data: dict | None = None
        # split -> (num_pairs, 2) float64 [chosen, rejected] reference log-probs; scored by the
        # policy engine before its first update (start()), or restored from a checkpoint
        self.tables: dict[str, torch.Tensor] = {}
        self._micro_batch = 1

    def _prepare(self, cfg: Config, dist: DistInfo, tokenizer) -> dict:
        """Both splits' pairs: split -> (num_pairs, collate with reference log-probs attached)."""
        if self._data is not None:
            return self._data
        from gpt_dist.finetune.dpo import attach_reference
        from gpt_dist.finetune.dpo_data import load_dpo_pairs, pair_batch

        template = self.template(cfg, tokenizer)
        self._micro_batch = cfg.train.micro_batch_size
        self._data, self._plain = {}, {}
        for split in ("train", "val") if cfg.data.val else ("train",):
            report = DataReport("dpo", split)
            key = "data.train" if split == "train" else "data.val"
            pairs = load_dpo_pairs(self._sources(cfg, split), template, cfg.seq_len, report, cfg.train.seed, key=key)
            report.publish(cfg.run_dir, dist.is_main, cfg.finetune.max_bad_fraction)
            plain = lambda idx, pairs=pairs: pair_batch([pairs[i] for i in idx], cfg.seq_len, tokenizer.eot_id)  # noqa: E731
            self._plain[split] = (len(pairs), plain)
            self._data[split] = (len(pairs), lambda idx, split=split, plain=plain:
                                 attach_reference(plain(idx), self._table(split), idx))
        return self._data

    def _table(self, split: str) -> torch.Tensor:
        if split not in self.tables:
            raise RuntimeError("DPO reference log-probs are not scored yet: call start(model, dist) first")
        return self.tables[split]

    def start(self, model, dist: DistInfo) -> None:
        """Score the reference log-probs with `model` (the policy engine, before its first
        update, so its weights are the starting ones) unless a checkpoint brought them."""
        from gpt_dist.finetune.dpo import reference_logps

        missing = [split for split in self._plain if split not in self.tables]
        if not missing:
            return
        tables = reference_logps(model, dist, [self._plain[s] for s in missing], self._micro_batch)
        self.tables.update(zip(missing, tables))

    def state_dict(self) -> dict:
        # JSON-safe (the checkpoint metadata holds it too); Python floats round-trip exactly
        return {"reference_logps": {split: t.tolist() for split, t in self.tables.items()}}

    def load_state_dict(self, state: dict) -> None:
        for split, rows in (state.get("reference_logps") or {}).items():
            if split in self._plain and len(rows) == self._plain[split][0]:
                self.tables[split] = torch.tensor(rows, dtype=torch.float64).reshape(-1, 2)

    def train_loader(self, cfg: Config, dist: DistInfo, tokenizer):
        n, collate = self._prepare(cfg, dist, tokenizer)["train"]
        return EpochLoader(n, collate, cfg.train.micro_batch_size, dist.rank, dist.world_size, cfg.train.seed,
                           "data.train (dpo)")

    def val_loader(self, cfg: Config, dist: DistInfo, tokenizer):
        if not cfg.data.val:
            return None
        n, collate = self._prepare(cfg, dist, tokenizer)["val"]
        return EvalBatches(n, collate, cfg.train.micro_batch_size, dist.rank, dist.world_size, cfg.eval.batches,
                           "data.val (dpo)")

    def _losses(self, model, batch):
        """Per-pair (B,) total loss and the sums logged with it."""
        from gpt_dist.finetune.dpo import chosen_nll, dpo_loss, dpo_metric_sums, token_nll

        nll = token_nll(model, batch["input_ids"], batch["labels"])
        preference, chosen, rejected = dpo_loss(-nll.sum(dim=-1), batch["ref_logps"].to(nll.dtype), self.beta)
        chosen_reply_nll = chosen_nll(nll, batch["labels"])
        # weight 0 keeps plain DPO's loss bit for bit; the NLL is logged either way
        losses = preference + self.nll_weight * chosen_reply_nll if self.nll_weight else preference
        return losses, dpo_metric_sums(chosen, rejected, chosen_reply_nll, preference)

    def count(self, batch):
        pairs = batch["input_ids"].shape[0] // 2
        return Counts(torch.tensor(pairs, device=batch["input_ids"].device), unpadded_tokens(batch), trained_tokens(batch))

    def loss(self, model, batch):
        losses, metrics = self._losses(model, batch)
        return LossSum(losses.sum(), metrics)

    def eval_loss(self, model, batch):
        losses, metrics = self._losses(model, batch)
        return losses.sum(), torch.tensor(losses.shape[0], device=losses.device), metrics
