"""CLIP: shapes, the learned temperature and its cap, the token table's init, config errors, and the 2-rank loss
equal to the 1-process loss."""
import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp

from megadalle.config import ConfigError, build
from megadalle.config.clip import ClipConfig
from megadalle.config.compose import compose
from megadalle.models.clip import CLIP
from megadalle.train.clip import ClipTask
from megadalle.train.distributed import exit_process
from megadalle.train.param_edit import ParamEditor
from tests.sample.tiny_clip import TINY, batch


def test_features_are_unit_vectors_and_loss_trains_temperature():
    model = CLIP(TINY)
    image, text = batch(6)
    img, txt, _ = model(image, text)
    assert img.shape == txt.shape == (6, 16)
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(6))
    loss, metrics = model.loss(image, text)
    loss.backward()
    assert model.logit_scale.grad is not None and model.logit_scale.grad != 0
    assert metrics["temperature"] == pytest.approx(0.07, rel=1e-4)


def test_a_perfect_clip_scores_every_pair_with_repeated_captions_a_hit():
    """A perfect CLIP (each image embedded as its caption) on 64 pairs of 33 distinct captions, as the demo's
    batches repeat its 40 captions: clip_acc was 0.516, the first of each tied copy counting for all of them."""
    from megadalle.models.clip import contrastive_loss

    captions, embedding, which = perfect_clip_batch()
    text, emb = captions[which], embedding[which]
    _, metrics = contrastive_loss(emb, emb, torch.tensor(100.0), text)
    assert metrics["clip_acc"] == 1.0
    _, unknown = contrastive_loss(emb, emb, torch.tensor(100.0))  # without the ids a copy cannot be told
    assert unknown["clip_acc"] < 1.0
    wrong = torch.cat([emb[1:], emb[:1]])  # every image embedded as the next pair's caption
    _, missed = contrastive_loss(wrong, emb, torch.tensor(100.0), text)
    assert missed["clip_acc"] == pytest.approx((text[torch.arange(64)] == text[(torch.arange(64) + 1) % 64])
                                               .all(-1).float().mean().item())


def perfect_clip_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(33 captions' token ids, their embeddings, the 64 pairs' caption indices): the first 33 pairs one of each
    caption, the other 31 repeats."""
    g = torch.Generator().manual_seed(0)
    captions = torch.randint(4, 50, (33, 8), generator=g)
    embedding = torch.nn.functional.normalize(torch.randn(33, 16, generator=g), dim=-1)
    return captions, embedding, torch.cat([torch.arange(33), torch.randint(0, 33, (31,), generator=g)])


def test_with_gradient_caching_a_copy_of_the_own_caption_is_a_hit_too():
    """Over micro-batches (clip.negatives=update, the default) the loss saw the embeddings alone, so the logged
    clip_acc counted each repeat a miss while val/clip_acc, through CLIP.loss, did not."""
    from megadalle.config.clip import ClipConfig
    from megadalle.train.clip import ClipTask
    from megadalle.train.task import DataPart

    captions, embedding, which = perfect_clip_batch()
    scale = torch.nn.Parameter(torch.ones(()))

    class Engine:  # a perfect CLIP (each image embedded as its caption) run as DeepSpeed's engine runs it
        def __call__(self, batch, step, run):
            return run(lambda image, text: (embedding[image] * scale, embedding[image] * scale, 100 * scale), batch,
                       step)

        def gradient_accumulation_steps(self):
            return 2

        def backward(self, loss):
            loss.backward()

        def step(self):
            pass

    runner = ClipTask(ClipConfig(), None, None).update_runner(DataPart(32, 2, 0, 1))
    batches = [{"image": which[rows], "text": captions[which[rows]], "sample": torch.arange(64)[rows]}
               for rows in (slice(0, 32), slice(32, 64))]
    assert runner(Engine(), batches, 0)["clip_acc"] == 1.0


def clamped(model: CLIP, optimizer) -> None:
    """What the trainer does after each update: the task's after_update (stage 0, the optimizer's own params)."""
    ClipTask(TINY, None, None).after_update(model, ParamEditor(SimpleNamespace(optimizer=optimizer), 0), 0)


def test_the_logit_scale_can_fall_after_reaching_the_cap():
    """A cap inside the forward (exp().clamp(max=100)) gave the parameter past ln 100 no gradient: the scale stayed
    at 100 whatever the loss wanted. One image for six captions prefers a lower scale (its image-to-text rows are
    one row with six labels, which a flatter softmax fits better)."""
    model = CLIP(TINY)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(100) + 0.01)
    optimizer = torch.optim.AdamW([model.logit_scale], lr=0.05, weight_decay=0)
    image, text = batch(6)
    loss, _ = model.loss(image[:1].expand(6, -1, -1, -1), text)
    loss.backward()
    assert model.logit_scale.grad > 0
    optimizer.step()
    clamped(model, optimizer)
    assert model.scale().item() < 99


@pytest.mark.parametrize("start, end", [(math.log(100) + 1, math.log(100)), (-0.5, 0.0), (3.0, 3.0)])
def test_the_logit_scale_is_clamped_into_its_range_after_each_update(start, end):
    model = CLIP(TINY)
    optimizer = torch.optim.AdamW(model.parameters())
    with torch.no_grad():
        model.logit_scale.fill_(start)
    clamped(model, optimizer)
    assert model.logit_scale.item() == pytest.approx(end, abs=1e-6)


def test_the_token_table_is_drawn_as_clips():
    """N(0, 0.02) as CLIP's token embedding, twice its positions' 0.01 (torch's default was N(0, 1): 100 times)."""
    torch.manual_seed(0)
    model = CLIP(replace(TINY, text_vocab=1000))
    assert model.text.tok.weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert model.text.tok.weight.mean().abs().item() < 1e-3
    assert model.text.pos.std().item() == pytest.approx(0.01, rel=0.1)


def test_text_feature_ignores_pads_and_resizes_images():
    model = CLIP(TINY).eval()
    image, text = batch(2)
    longer = torch.cat([text, torch.zeros(2, 0, dtype=torch.long)], 1)
    torch.testing.assert_close(model.encode_text(text), model.encode_text(longer))
    big = torch.nn.functional.interpolate(image, size=32, mode="nearest")
    assert model.encode_image(big).shape == (2, 16)


@pytest.mark.parametrize("name", ["tiny", "base"])
def test_config_group_composes_and_validates(name):
    cfg = build(ClipConfig, compose("train-clip", [f"clip={name}"]).clip, "clip")
    assert cfg.image_size % cfg.patch_size == 0
    with pytest.raises(ConfigError, match="clip.image_size=30"):
        build(ClipConfig, {"image_size": 30, "patch_size": 4}, "clip")
    with pytest.raises(ConfigError, match="clip.negatives='batch': expected one of"):
        build(ClipConfig, {"negatives": "batch"}, "clip")


def repeated(image: torch.Tensor, text: torch.Tensor):
    """The 8 pairs with each rank's first pair repeated on the other rank (2 ranks of 4): clip_acc then counts a
    copy picked across ranks as the one process does."""
    image, text = image.clone(), text.clone()
    image[5], text[5] = image[0], text[0]
    image[1], text[1] = image[4], text[4]
    return image, text


def _rank(rank: int, world: int, rendezvous: str, out: str):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = CLIP(TINY)
    image, text = repeated(*batch(8))
    per = 8 // world
    loss, metrics = model.loss(image[rank * per:(rank + 1) * per], text[rank * per:(rank + 1) * per])
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    total, acc = loss.detach().clone(), torch.tensor(metrics["clip_acc"])
    dist.all_reduce(grads)
    dist.all_reduce(total)
    dist.all_reduce(acc)
    if rank == 0:
        torch.save({"loss": total / world, "grads": grads / world, "clip_acc": acc / world}, out)
    exit_process(0)


@pytest.mark.distributed
def test_two_rank_loss_and_gradients_equal_one_process(tmp_path):
    """The ranks meet through a file, not a TCP store: no port to race for, and rank 0 runs no store
    server thread (a run in CI aborted at exit with 'terminate called without an active exception')."""
    out = str(tmp_path / "rank0.pt")
    mp.spawn(_rank, args=(2, str(tmp_path / "rendezvous"), out), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    torch.manual_seed(0)
    model = CLIP(TINY)
    loss, metrics = model.loss(*repeated(*batch(8)))
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    torch.testing.assert_close(got["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
    assert got["clip_acc"].item() == pytest.approx(metrics["clip_acc"])
    torch.testing.assert_close(got["grads"], grads, rtol=1e-4, atol=1e-6)
