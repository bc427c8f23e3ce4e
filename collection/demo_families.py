"""Tiny random-weight SigLIP and ALIGN, built the way the demo CLIP is (``collection.demo_model``).

The README promises CLIP, SigLIP and ALIGN; these two let the tests run every family through the real
loading, embedding, ONNX and fine-tuning code. Their configs come from ``transformers``, shrunk to a few
hundred kB of weights; their weights are random (seeded) and their model cards say they are demos.

No tokenizer file of either family can be had offline, so each is trained here on the captions given
(the tests pass coco_mini's when ``../shared`` is there, else ``BUILT_IN_TEXT``):

- SigLIP: a unigram model with SentencePiece's pre-tokenisation (``▁`` for spaces) and ``</s>`` appended,
  as SigLIP's SentencePiece tokenizer does, saved as a ``tokenizer.json`` that ``PreTrainedTokenizerFast``
  loads: ``SiglipTokenizer`` itself needs the ``sentencepiece`` package, which Loupe does not install.
- ALIGN: a BERT WordPiece vocabulary (uncased, ``[CLS] … [SEP]``) for ``BertTokenizerFast``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import torch

from collection.model_card import MODEL_CARD_FILE

DEMO_SEED = 20261203
# SigLIP pads every text to this many tokens (its training length; 64 for the released models).
SIGLIP_TEXT_TOKENS = 16
BUILT_IN_TEXT = (
    "a photo of a dog running on the beach",
    "two people riding bicycles down a busy city street at night",
    "a red car parked next to a white house",
    "a plate of food with rice and vegetables on a wooden table",
    "a cat sleeping on a laptop keyboard",
    "a group of children playing football in a green park",
    "an airplane flying over snowy mountains under a blue sky",
    "a bowl of fruit with apples bananas and oranges",
    "a man holding an umbrella in the rain",
    "a train stopped at an old station in the snow",
    "black and white photograph of a bridge over a river",
    "a close up of a yellow flower in a garden",
)


def build_demo_siglip(out_dir: Path, captions: Iterable[str] = BUILT_IN_TEXT, *, seed: int = DEMO_SEED) -> Path:
    """Write a tiny random-weight SigLIP (weights, tokenizer, processor, model card) to ``out_dir``."""
    from transformers import PreTrainedTokenizerFast, SiglipConfig, SiglipImageProcessor, SiglipModel  # noqa: PLC0415 - seconds to import: only when a model is built

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_unigram_tokenizer(captions, vocab_size=400),
        eos_token="</s>",
        pad_token="</s>",  # as SigLIP's own tokenizer: padding is the end-of-text token
        unk_token="<unk>",
        model_max_length=SIGLIP_TEXT_TOKENS,
        model_input_names=["input_ids", "attention_mask"],  # as SiglipTokenizer: no token type ids
    )
    config = SiglipConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": SIGLIP_TEXT_TOKENS,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "projection_size": 32,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
    )
    torch.manual_seed(seed)
    processor = SiglipImageProcessor(size={"height": 32, "width": 32})
    return _save(out_dir, SiglipModel(config), tokenizer, processor, "loupe-demo-tiny-siglip", seed)


def build_demo_align(out_dir: Path, captions: Iterable[str] = BUILT_IN_TEXT, *, seed: int = DEMO_SEED) -> Path:
    """Write a tiny random-weight ALIGN (BERT text tower, EfficientNet image tower) to ``out_dir``."""
    from transformers import AlignConfig, AlignModel, BertTokenizerFast, EfficientNetImageProcessor  # noqa: PLC0415 - seconds to import: only when a model is built

    tokenizer = BertTokenizerFast(tokenizer_object=_wordpiece_tokenizer(captions, vocab_size=400), model_max_length=64)
    config = AlignConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
            "pad_token_id": tokenizer.pad_token_id,
        },
        # EfficientNet at a tenth of the width and depth: 8-32 channels, one block per stage. The image
        # vector is the last stage's pooled channels, so their number is the projection's size.
        vision_config={
            "image_size": 32,
            "width_coefficient": 0.1,
            "depth_coefficient": 0.1,
            "hidden_dim": 64,
        },
        projection_dim=32,
        # CLIP's starting temperature (Radford et al. 2021); ALIGN's config starts at 1.0, a contrastive scale
        # so flat that a fine-tune of the random demo barely moves (measured: held-out recall unchanged).
        temperature_init_value=0.07,
    )
    torch.manual_seed(seed)
    model = AlignModel(config)
    # transformers draws ALIGN's convolutions from N(0, 0.02), right for pre-training but, left random, seven
    # stages shrink the signal to ~1e-30 (measured): image vectors of rounding noise that no ONNX or int8 check
    # could judge. He initialisation (He et al. 2015) keeps the activations' scale through the stages.
    for module in model.vision_model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    # Likewise the random BERT's attention is near uniform, so its [CLS] state (ALIGN's text feature) hardly
    # depends on the words: six colour queries' states differed by 0.2% of their norm (measured), too little for
    # a fine-tune of the projection to separate. Xavier weights and unit embeddings: 16%.
    for module in model.text_model.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.xavier_normal_(module.weight)
        elif isinstance(module, torch.nn.Embedding):
            torch.nn.init.normal_(module.weight, std=1.0)
    processor = EfficientNetImageProcessor(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32})
    return _save(out_dir, model, tokenizer, processor, "loupe-demo-tiny-align", seed)


def _save(out_dir: Path, model, tokenizer, processor, name: str, seed: int) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    card = {
        "name": name,
        "demo": True,
        "seed": seed,
        "description": "Random weights, locally trained tokenizer: for tests and offline demos; no semantic quality.",
    }
    # The card is written last: its presence means the folder is complete.
    (out_dir / MODEL_CARD_FILE).write_text(json.dumps(card, indent=2))
    return out_dir


def _unigram_tokenizer(captions: Iterable[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: PLC0415

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    specials = ["<pad>", "</s>", "<unk>"]
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>")
    tokenizer.train_from_iterator(list(captions), trainer=trainer)
    eos = tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", eos)])
    return tokenizer


def _wordpiece_tokenizer(captions: Iterable[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors  # noqa: PLC0415

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    # The vocabulary is built here, not by tokenizers' WordPieceTrainer: its merges break ties in hash order,
    # so two builds from the same captions differed (vocab.txt of a fresh clone vs an older checkout), and
    # with them every vector of the demo ALIGN. Every character, its ## continuation, then the most frequent
    # words (ties by spelling): the same captions give the same vocabulary, and greedy longest-match still
    # tokenizes any word.
    words: Counter[str] = Counter()
    for caption in captions:
        normalized = tokenizer.normalizer.normalize_str(caption)
        words.update(word for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(normalized))
    chars = sorted({char for word in words for char in word})
    pieces = [*specials, *chars, *(f"##{char}" for char in chars)]
    ranked = [w for w, _ in sorted(words.items(), key=lambda item: (-item[1], item[0])) if len(w) > 1]
    pieces += ranked[: max(0, vocab_size - len(pieces))]
    tokenizer.model = models.WordPiece(vocab={piece: i for i, piece in enumerate(pieces)}, unk_token="[UNK]")
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return tokenizer
