"""Continued pre-training (domain adaptation) on raw documents, over TRL's ``SFTTrainer``.

The documents (``.md``, ``.markdown``, ``.txt`` under ``config.docs``, recursively, in path order) are
tokenized without special tokens, joined with the tokenizer's EOS after each document, and cut into
``block_size``-token blocks. The last, partial block is kept and padded by the collator (padding is not in
the loss): a small domain corpus loses no text. Every real token is trained (plain next-token loss), so
the dataset goes to the trainer already tokenized, with no packing and no completion-only masking.
``block_size`` sets the sequence length (``max_length`` does not apply). The EOS is the tokenizer's
(``<|im_end|>`` for the embedded models): the token that ends an assistant turn also ends a document.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentft.errors import UserError
from agentft.train.common import (
    callbacks,
    finish_run,
    prepare_model,
    resolve_device,
    resume_point,
    train_timed,
    trainer_arguments,
)
from agentft.train.config import CPTTrainConfig

__all__ = ["train_cpt", "document_files", "read_documents", "token_blocks", "DOC_SUFFIXES"]

DOC_SUFFIXES = (".md", ".markdown", ".txt")


def document_files(docs: str | Path) -> list[Path]:
    """The document files under ``docs`` (a directory, or one file), hidden files and folders skipped."""
    root = Path(docs).expanduser()
    if root.is_file():
        if root.suffix.lower() not in DOC_SUFFIXES:
            raise UserError(f"{root} is not a document ({', '.join(DOC_SUFFIXES)})")
        return [root]
    if not root.is_dir():
        raise UserError(f"document directory {root} does not exist")
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in DOC_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise UserError(f"no documents ({', '.join(DOC_SUFFIXES)}) under {root}")
    return files


def read_documents(files: list[Path]) -> list[str]:
    """The texts of ``files`` (UTF-8); empty ones are skipped, unreadable ones are an error naming the file."""
    texts = []
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(
                f"{file} is not UTF-8 text ({exc.reason} at byte {exc.start}): convert it or remove it"
            ) from None
        except OSError as exc:
            raise UserError(f"cannot read {file}: {exc.strerror or exc}") from None
        if text.strip():
            texts.append(text)
    if not texts:
        raise UserError(f"all {len(files)} document(s) are empty")
    return texts


def token_blocks(texts: list[str], tokenizer: Any, block_size: int) -> list[list[int]]:
    """Tokenize, join with EOS after each document, cut into ``block_size`` blocks (the last may be shorter)."""
    if block_size < 2:
        raise UserError(f"block_size must be at least 2, not {block_size}")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise UserError("the tokenizer has no EOS token to separate documents")
    stream: list[int] = []
    for text in texts:
        stream.extend(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
        stream.append(eos)
    blocks = [stream[i : i + block_size] for i in range(0, len(stream), block_size)]
    if len(blocks) > 1 and len(blocks[-1]) < 2:  # a lone token has nothing to predict
        blocks.pop()
    return blocks


def train_cpt(config: CPTTrainConfig) -> dict[str, Any]:
    """Train and write the output directory; returns the metrics (also in ``manifest.json``)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    device = resolve_device(config)
    out = Path(config.out)
    files = document_files(config.docs)
    texts = read_documents(files)
    checkpoint = resume_point(config)
    model, tokenizer = prepare_model(config, device)
    blocks = token_blocks(texts, tokenizer, config.block_size)
    arguments = SFTConfig(
        **trainer_arguments(config, device),
        packing=False,
        completion_only_loss=False,
        padding_free=False,
        max_length=config.block_size,
        eval_strategy="no",
    )
    trainer = SFTTrainer(
        model=model,
        processing_class=tokenizer,
        args=arguments,
        train_dataset=Dataset.from_dict({"input_ids": blocks}),
        callbacks=callbacks(out),
    )
    metrics: dict[str, Any] = {
        "device": device,
        "documents": len(texts),
        "blocks": len(blocks),
        "block_size": config.block_size,
        "document_tokens": sum(map(len, blocks)),
        "last_block": "padded",
    }
    metrics.update(train_timed(trainer, checkpoint))
    return finish_run(trainer, tokenizer, config, kind="cpt", inputs=files, metrics=metrics)
