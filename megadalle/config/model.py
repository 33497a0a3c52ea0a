"""The Transformer's configuration (conf/model/*.yaml)."""
from __future__ import annotations

from dataclasses import dataclass, field

from megadalle.attention.masks import MASK_KINDS, PAPER_PATTERN, layer_kinds
from megadalle.config import check, join

ATTENTION_BACKENDS = ("auto", "reference", "triton")


@dataclass
class TransformerConfig:
    text_len: int = 256
    """Text positions; captions are truncated to this and padded with `text_pad_id`."""
    text_vocab: int = 16384
    """BPE vocabulary size (the tokenizer's); the paper's is 16384."""
    text_pad_id: int = 0
    """Token id of padding; a pad at position i is embedded by the learned pad embedding i."""
    grid_size: int = 32
    """Side of the square image-token grid (the dVAE's output: 256 px / 8 = 32)."""
    image_vocab: int = 8192
    """dVAE codebook size."""
    n_layers: int = 64
    """Transformer blocks (the paper's 64); a pipeline cut by blocks (type:Block, the default) has at most this
    many stages."""
    n_heads: int = 62
    """Attention heads per block (the paper's 62); n_heads * head_dim must equal d_model."""
    head_dim: int = 64
    """Width of each attention head (the paper's 64: 62 x 64 = d_model 3968)."""
    d_model: int = 3968
    """Residual width; must equal n_heads * head_dim."""
    mlp_ratio: int = 4
    """Hidden width of each MLP as a multiple of d_model."""
    dropout: float = 0.0
    """Dropout probability on each block's attention and MLP outputs before the residual add, in [0, 1);
    0 turns it off."""
    attention_pattern: list[str] = field(default_factory=lambda: list(PAPER_PATTERN))
    """Mask kinds repeated over the layers; the paper's puts column attention at 1-based layers 2, 6, 10..."""
    last_layer_attention: str | None = "conv"
    """Mask kind of the final layer (the paper's convolutional mask), or null to keep the pattern."""
    conv_kernel: int = 11
    """Side of the causal convolutional window (odd)."""
    conv_wrap: bool = True
    """Whether the conv window wraps at the image edge as the paper's does."""
    text_loss_weight: float = 0.125
    """Weight of the text cross-entropy (a mean over the non-pad text targets) in the loss; the paper's 1/8."""
    image_loss_weight: float = 0.875
    """Weight of the image-token cross-entropy (a mean over the grid's tokens) in the loss; the paper's 7/8.
    The paper's weights sum to 1; nothing requires it."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in the backward instead of storing them."""
    attention_backend: str = "auto"
    """`auto` takes the Triton kernel on CUDA and the reference path elsewhere; the others force one."""
    vocab_chunk: int = 0
    """Most rows of a vocabulary table (each token embedding, each segment of the output matrix) in one
    parameter; 0 keeps every table whole. ZeRO-3 gathers and reduces a parameter whole, so tables cut into
    pieces no larger than a block's matrices are never held whole at once (names then end in `pieces.N`).
    A training-memory layout only: `export` writes the tables whole (its config says 0)."""

    @property
    def grid_len(self) -> int:
        return self.grid_size * self.grid_size

    @property
    def seq_len(self) -> int:
        return self.text_len + self.grid_len

    def validate(self, where: str = "model") -> None:
        for name in ("text_len", "text_vocab", "grid_size", "image_vocab", "n_layers", "n_heads",
                     "head_dim", "d_model", "mlp_ratio", "conv_kernel"):
            value = getattr(self, name)
            check(value > 0, join(where, name), value, "must be positive")
        check(self.n_heads * self.head_dim == self.d_model, f"{where}.d_model", self.d_model,
              f"must equal n_heads * head_dim = {self.n_heads} * {self.head_dim} = {self.n_heads * self.head_dim}")
        check(0 <= self.text_pad_id < self.text_vocab, f"{where}.text_pad_id", self.text_pad_id,
              f"must be a token id below text_vocab={self.text_vocab}")
        check(self.conv_kernel % 2 == 1, f"{where}.conv_kernel", self.conv_kernel, "must be odd")
        check(0.0 <= self.dropout < 1.0, f"{where}.dropout", self.dropout, "must be in [0, 1)")
        check(len(self.attention_pattern) > 0, f"{where}.attention_pattern", self.attention_pattern,
              "must name at least one mask kind")
        for i, kind in enumerate(self.attention_pattern):
            check(kind in MASK_KINDS, f"{where}.attention_pattern[{i}]", kind, f"unknown mask kind; expected one of {MASK_KINDS}")
        check(self.last_layer_attention in (None, *MASK_KINDS), f"{where}.last_layer_attention",
              self.last_layer_attention, f"unknown mask kind; expected one of {MASK_KINDS} or null")
        if len(self.attention_pattern) > self.n_layers:
            check(False, f"{where}.attention_pattern", self.attention_pattern,
                  too_long(self.attention_pattern, self.n_layers, self.last_layer_attention, where))
        for name in ("text_loss_weight", "image_loss_weight"):
            check(getattr(self, name) >= 0, f"{where}.{name}", getattr(self, name), "must be non-negative")
        check(self.text_loss_weight + self.image_loss_weight > 0, f"{where}.image_loss_weight",
              self.image_loss_weight, "text and image loss weights cannot both be zero")
        check(self.vocab_chunk >= 0, f"{where}.vocab_chunk", self.vocab_chunk, "must be 0 (whole tables) or positive")
        check(self.attention_backend in ATTENTION_BACKENDS, f"{where}.attention_backend",
              self.attention_backend, f"expected one of {ATTENTION_BACKENDS}")
        check(self.text_vocab >= 2, f"{where}.text_vocab", self.text_vocab, "needs a word besides the pad")
        if self.attention_backend == "triton":  # `auto` falls back to the reference path for other sizes
            from megadalle.kernels import HEAD_DIMS

            check(self.head_dim in HEAD_DIMS, f"{where}.head_dim", self.head_dim,
                  f"attention_backend=triton serves head_dim in {HEAD_DIMS} (auto takes the reference path for others)")


def too_long(pattern: list[str], n_layers: int, last: str | None, where: str) -> str:
    """Why a pattern longer than the layers is refused, and both ways out. It is not cut to fit, though it repeats
    over the layers (DESIGN.md: the paper's pattern is a config value): cut, the kinds past the last layer would be
    dropped unseen, and with them, under the paper's pattern, column attention (`model=small model.n_layers=2`
    would train a row and a conv layer, no column one). So the shorter pattern offered says which layers it trains
    (`last` overriding the final one) and which kinds none of them has. Asked after the kinds are checked, so
    masks.layer_kinds takes them."""
    kept = list(pattern[:max(n_layers - (1 if last else 0), 1)])
    trained = layer_kinds(n_layers, kept, last)
    missing = [kind for kind in dict.fromkeys(pattern) if kind not in trained]
    loses = f"; no {' or '.join(missing)} attention" if missing else ""
    return (f"is longer than n_layers={n_layers}: its kinds past layer {n_layers} would never be used; set "
            f"{join(where, 'attention_pattern')}=[{','.join(kept)}] (layers {','.join(trained)}{loses}) or another "
            f"pattern of at most {n_layers} kind{'s' if n_layers != 1 else ''}, or {join(where, 'n_layers')}="
            f"{len(pattern)} or more")


SCHEMAS = {"model": TransformerConfig}
