"""The trainable top of a two-tower model (CLIP; the projections of ALIGN and SigLIP), over cached inputs.

Fine-tuning changes as little of the model as it can: the projections (``layers=0``) or the last
``layers`` transformer blocks of each tower with their final norm and projection. Everything below
stays frozen, so what enters the trainable part is computed once per image and per query
(``ranking.finetune.tower_inputs``) and an epoch never runs the frozen blocks again.

The final block's output is only read at one token (the class token of an image, the end-of-text
token of a text), so it is computed for that token alone: keys and values for every token, the query,
attention output and MLP for one. That is exact, and for ViT-B/32 (50 tokens) about 5x cheaper than
running the whole block. A test pins these outputs to the model's own ``get_*_features``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class UnsupportedModel(ValueError):
    """The model's towers are not CLIP-shaped (blocks with q/k/v projections, final norms, two projections)."""


@dataclass
class TextStates:
    """What enters the trainable text blocks: hidden states, their attention mask, and each text's EOS index.

    With ``layers=0`` it is the pooled output alone (``mask`` and ``eos`` are None).
    """

    states: torch.Tensor  # (n, tokens, width), or (n, width) when pooled
    mask: torch.Tensor | None = None  # (n, tokens) bool: a real token
    eos: torch.Tensor | None = None  # (n,) long

    def __len__(self) -> int:
        return len(self.states)

    def __getitem__(self, rows) -> TextStates:
        if self.mask is None:
            return TextStates(self.states[rows])
        return TextStates(self.states[rows], self.mask[rows], self.eos[rows])

    def to(self, device: torch.device) -> TextStates:
        """The same states on ``device`` (themselves when they are there already)."""
        if self.mask is None:
            return TextStates(self.states.to(device))
        return TextStates(self.states.to(device), self.mask.to(device), self.eos.to(device))


def _heads_of(attention) -> tuple[int, int]:
    return attention.num_heads, attention.head_dim


def _attend(layer, normed: torch.Tensor, query_rows: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Multi-head attention of ``query_rows`` (n, q, width) over ``normed`` (n, tokens, width)."""
    attention = layer.self_attn
    heads, head_dim = _heads_of(attention)
    n, tokens, width = normed.shape

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.view(n, x.shape[1], heads, head_dim).transpose(1, 2)

    q, k, v = split(attention.q_proj(query_rows)), split(attention.k_proj(normed)), split(attention.v_proj(normed))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attention.scale)
    return attention.out_proj(out.transpose(1, 2).reshape(n, query_rows.shape[1], width))


def run_block(layer, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """One CLIP encoder block over every token (``mask``: (n, 1, tokens, tokens) bool, True = may attend)."""
    normed = layer.layer_norm1(hidden)
    hidden = hidden + _attend(layer, normed, normed, mask)
    return hidden + layer.mlp(layer.layer_norm2(hidden))


def run_block_at(layer, hidden: torch.Tensor, index: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    """The block's output at one token per row (``index``), exactly as the full block computes it there."""
    rows = torch.arange(len(hidden), device=hidden.device)
    normed = layer.layer_norm1(hidden)
    out = hidden[rows, index] + _attend(layer, normed, normed[rows, index].unsqueeze(1), key_mask)[:, 0]
    return out + layer.mlp(layer.layer_norm2(out))


FIXED_NAMES = {
    "text_norm": "text_model.final_layer_norm.",
    "vision_norm": "vision_model.post_layernorm.",
    "visual_projection": "visual_projection.",
}


@dataclass(frozen=True)
class ProjectionLayout:
    """Where a model family keeps what the projection-only fine-tune trains.

    CLIP projects both towers' pooled outputs. ALIGN projects the text tower's [CLS] state and uses the
    image tower's pooled output as it is; SigLIP's text "projection" is the head inside its text model, read
    at the last token (texts are padded to a fixed length), and its image features are the attention-pooling
    head's output. Where a tower has no projection, its side stays fixed: the image vectors do not move.
    """

    family: str
    text_projection: str  # the parameter-name prefix of the text projection in the model
    image_projection: bool  # CLIP's visual_projection; False: image features are the tower's pooled output
    text_pooled: Callable[[object], torch.Tensor]  # the text model's output -> what enters the text projection

    def text_projection_of(self, model) -> nn.Linear:
        return model.get_submodule(self.text_projection)


def layout_of(model) -> ProjectionLayout:
    """The projection layout of a CLIP, ALIGN or SigLIP model; :class:`UnsupportedModel` for anything else."""
    if not (hasattr(model, "text_model") and hasattr(model, "vision_model")):
        raise UnsupportedModel("Fine-tuning needs a two-tower model (text_model and vision_model).")
    if hasattr(model, "text_projection") and hasattr(model, "visual_projection"):
        return ProjectionLayout("clip", "text_projection", True, lambda out: out.pooler_output)
    if hasattr(model, "text_projection"):  # ALIGN: text_projection(last_hidden_state[:, 0]), see get_text_features
        return ProjectionLayout("align", "text_projection", False, lambda out: out.last_hidden_state[:, 0])
    if isinstance(getattr(model.text_model, "head", None), nn.Linear):  # SigLIP: head(final norm at the last token)
        return ProjectionLayout("siglip", "text_model.head", False, lambda out: out.last_hidden_state[:, -1])
    raise UnsupportedModel("Fine-tuning needs a CLIP, ALIGN or SigLIP model (a text projection to train).")


def logit_scale_of(model) -> float:
    """The model's contrastive temperature as a multiplier: CLIP and SigLIP learn log(scale), ALIGN 1/scale."""
    if hasattr(model, "logit_scale"):
        return float(model.logit_scale.detach().exp())
    return float(1.0 / model.temperature.detach())


class FixedProjection(nn.Module):
    """The identity, for an image tower without a projection: a buffer, so it never trains nor is saved."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.in_features = self.out_features = width
        self.register_buffer("weight", torch.eye(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def image_projection_weight(model) -> torch.Tensor:
    """What turns cached pooled image outputs into image vectors (before normalising): CLIP's visual
    projection, the identity for families whose image features are the pooled output."""
    if layout_of(model).image_projection:
        return model.visual_projection.weight.detach()
    return torch.eye(layout_of(model).text_projection_of(model).out_features)


class TowerHeads(nn.Module):
    """Trainable copies of the last ``layers`` blocks, final norms and projections of a CLIP model.

    ``model_state()`` names each tensor as the model does, so WiSE-FT can interpolate with the start and
    a new version is written by loading it into a copy of the model.
    """

    def __init__(self, model, layers: int = 0, text_layers: int | None = None) -> None:
        """``layers`` blocks of the vision tower, and of the text tower unless ``text_layers`` says otherwise."""
        super().__init__()
        text_layers = layers if text_layers is None else text_layers
        self.layout = layout_of(model)
        if self.layout.family != "clip" and (layers or text_layers):
            raise UnsupportedModel(
                f"Only the projections of a {self.layout.family} model can be fine-tuned (layers=0)."
            )
        if self.layout.family == "clip":
            text_blocks, vision_blocks = model.text_model.encoder.layers, model.vision_model.encoder.layers
        else:  # projections only (checked above): no block is copied
            text_blocks = vision_blocks = nn.ModuleList()
        for n, blocks in ((layers, vision_blocks), (text_layers, text_blocks)):
            if not 0 <= n <= len(blocks):
                raise UnsupportedModel(f"layers must be between 0 and {len(blocks)} for this model.")
            if n and not hasattr(blocks[-1], "self_attn"):
                raise UnsupportedModel("Only the projections of this model can be fine-tuned (layers=0).")
        self.vision_layers, self.text_layers = layers, text_layers
        self.text_blocks = nn.ModuleList(copy.deepcopy(list(text_blocks)[len(text_blocks) - text_layers :]))
        self.vision_blocks = nn.ModuleList(copy.deepcopy(list(vision_blocks)[len(vision_blocks) - layers :]))
        self.text_norm = copy.deepcopy(model.text_model.final_layer_norm) if text_layers else nn.Identity()
        self.vision_norm = copy.deepcopy(model.vision_model.post_layernorm) if layers else nn.Identity()
        self.text_projection = copy.deepcopy(self.layout.text_projection_of(model))
        self.visual_projection = (
            copy.deepcopy(model.visual_projection)
            if self.layout.image_projection
            else FixedProjection(self.text_projection.out_features)
        )
        self._model_names = self._name_map(len(text_blocks), len(vision_blocks))
        self.requires_grad_(True)

    def _name_map(self, text_depth: int, vision_depth: int) -> dict[str, str]:
        names = {}
        for own, _ in self.named_parameters():
            part, _, rest = own.partition(".")
            if part == "text_blocks":
                index, _, tail = rest.partition(".")
                names[own] = f"text_model.encoder.layers.{text_depth - self.text_layers + int(index)}.{tail}"
            elif part == "vision_blocks":
                index, _, tail = rest.partition(".")
                names[own] = f"vision_model.encoder.layers.{vision_depth - self.vision_layers + int(index)}.{tail}"
            elif part == "text_projection":
                names[own] = f"{self.layout.text_projection}.{rest}"
            else:
                names[own] = FIXED_NAMES[part] + rest
        return names

    # --- state ---------------------------------------------------------------------------------------
    def model_state(self) -> dict[str, torch.Tensor]:
        """Every trainable tensor under the model's own parameter name (detached copies, in host memory: what
        WiSE-FT mixes and a new version is written from, wherever the heads train)."""
        return {self._model_names[own]: p.detach().to("cpu", copy=True) for own, p in self.named_parameters()}

    def load_model_state(self, state: dict[str, torch.Tensor]) -> None:
        own = dict(self.named_parameters())
        with torch.no_grad():
            for name, model_name in self._model_names.items():
                own[name].copy_(state[model_name])

    # --- forward ---------------------------------------------------------------------------------------
    def image_pooled(self, inputs: torch.Tensor) -> torch.Tensor:
        """The vision tower's pooled output (before the projection) from what enters the trainable blocks."""
        if not self.vision_layers:
            return inputs
        hidden = inputs
        for layer in self.vision_blocks[:-1]:
            hidden = run_block(layer, hidden, None)
        cls = torch.zeros(len(hidden), dtype=torch.long, device=hidden.device)
        return self.vision_norm(run_block_at(self.vision_blocks[-1], hidden, cls, None))

    def image(self, inputs: torch.Tensor) -> torch.Tensor:
        """Unit image vectors."""
        return F.normalize(self.visual_projection(self.image_pooled(inputs)), dim=-1)

    def text(self, inputs: TextStates) -> torch.Tensor:
        """Unit text vectors."""
        if not self.text_layers:
            return F.normalize(self.text_projection(inputs.states), dim=-1)
        hidden, real = inputs.states, inputs.mask
        tokens = hidden.shape[1]
        if len(self.text_blocks) > 1:
            causal = torch.ones(tokens, tokens, dtype=torch.bool, device=hidden.device).tril()
            full_mask = (causal[None] & real[:, None, :])[:, None]  # (n, 1, tokens, tokens)
            for layer in self.text_blocks[:-1]:
                hidden = run_block(layer, hidden, full_mask)
        # The EOS token attends to itself and everything before it (causal), never to padding after it.
        key_mask = (torch.arange(tokens, device=hidden.device)[None] <= inputs.eos[:, None])[:, None, None, :]
        pooled = self.text_norm(run_block_at(self.text_blocks[-1], hidden, inputs.eos, key_mask))
        return F.normalize(self.text_projection(pooled), dim=-1)
