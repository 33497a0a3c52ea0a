"""The kernel as a registered custom op: opcheck passes and torch.compile(fullgraph=True) traces the model.

On the CPU the compiled graph calls the op, whose real implementation runs the kernels under the
Triton interpreter, so the compiled model must give the eager losses and gradients.
"""
import dataclasses

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from .helpers import layout_of, spec_of
from megadalle.attention import attend
from megadalle.attention.dispatch import _layout_source
from megadalle.config import build
from megadalle.config.compose import compose
from megadalle.config.model import TransformerConfig
from megadalle.kernels import register_layout_source
from megadalle.kernels.op import TABLES
from megadalle.models.transformer import Transformer


def test_opcheck_forward_with_autograd():
    spec = spec_of("column", 8, 4, 5)
    layout = layout_of(spec, spec.seq_len)
    q, k, v = (torch.randn(1, 2, spec.seq_len, 16, requires_grad=True) for _ in range(3))
    args = (q, k, v, layout.order, *(getattr(layout, name) for name in TABLES), 16, 16, 0.25)
    torch.library.opcheck(torch.ops.megadalle.sparse_attention.default, args)


def test_opcheck_forward_from_a_layout_source():
    """opcheck's dynamic-shape pass traces the op with a symbolic length: the fake needs no layout."""
    spec = spec_of("column", 8, 4, 5)
    source = register_layout_source("test: column 8+4x5", lambda seq_len, device: layout_of(spec, seq_len))
    q, k, v = (torch.randn(1, 2, spec.seq_len - 3, 16, requires_grad=True) for _ in range(3))
    torch.library.opcheck(torch.ops.megadalle.sparse_attention_from.default, (q, k, v, source, 0.25))


@pytest.mark.parametrize("dynamic", [None, True])
def test_compiled_kernel_attention_serves_a_changing_sequence_length(dynamic):
    """fullgraph=True: Dynamo makes the length symbolic at the second length seen (dynamic=None) or at once
    (dynamic=True); the kernel path must trace it, and give the reference's outputs and gradients."""
    spec = spec_of("column", 3, 4, 5)
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(lambda q, k, v: attend(q, k, v, spec, "triton"), backend=counter, fullgraph=True,
                             dynamic=dynamic)
    for seq_len in (spec.seq_len, spec.seq_len - 3, spec.seq_len - 6):
        q, k, v = (torch.randn(2, 2, seq_len, 16, requires_grad=True) for _ in range(3))
        out = compiled(q, k, v)
        grad = torch.randn_like(out)
        expected = attend(q, k, v, spec, "reference")
        torch.testing.assert_close(out, expected, atol=2e-5, rtol=2e-5)
        for got, want in zip(torch.autograd.grad(out, (q, k, v), grad),
                             torch.autograd.grad(expected, (q, k, v), grad)):
            torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5)
    assert counter.frame_count == (1 if dynamic else 2)  # the second length recompiles once, as dynamic


def test_the_layout_source_is_marked_constant_as_torch_compilers_decorator_marks_a_function():
    """dispatch marks `_layout_source` by hand (the decorator imports torch._dynamo): should torch change how the
    decorator marks, the hand-made mark would silently stop working."""
    def probe():
        return "name"

    marked = torch.compiler.assume_constant_result(probe)
    assert marked is probe and vars(probe)
    assert {name: getattr(_layout_source, name, None) for name in vars(probe)} == vars(probe)


def _loss_and_grads(model, run, text, image):
    """Loss and parameter gradients of `run` (the model or its compiled wrapper, which shares its parameters)."""
    loss, _ = run(text, image)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def test_compiled_tiny_transformer_on_the_kernel_matches_eager():
    cfg = build(TransformerConfig, compose("plan", ["model=tiny"]).model, "model")
    torch.manual_seed(0)
    model = Transformer(dataclasses.replace(cfg, attention_backend="triton"))
    g = torch.Generator().manual_seed(1)
    text = torch.randint(1, cfg.text_vocab, (1, cfg.text_len), generator=g)  # batch 1: the interpreter is slow
    image = torch.randint(0, cfg.image_vocab, (1, cfg.grid_len), generator=g)

    eager_loss, eager_grads = _loss_and_grads(model, model.loss, text, image)
    torch._dynamo.reset()
    # aot_eager: Dynamo and AOTAutograd trace the model and the op's fake and autograd registrations;
    # Inductor's CPU code generation would add nothing to what this proves (the op stays opaque).
    compiled = torch.compile(model.loss, fullgraph=True, backend="aot_eager")
    loss, grads = _loss_and_grads(model, compiled, text, image)
    torch.testing.assert_close(loss, eager_loss, atol=1e-5, rtol=1e-5)
    assert grads.keys() == eager_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, eager_grads[name], atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")
