"""One sample read twice in a CLIP batch (a global batch straddling an epoch boundary, data/order.py) is no negative
of its own pair, nor two negatives of the others: given the loader's sample ids, the contrastive loss contrasts each
pair with the de-duplicated batch, in one process, over ranks and over gradient-cached micro-batches alike; a batch
without copies gives the same bits as without the ids."""
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from megadalle.models.clip import CLIP, contrastive_loss, repeats
from megadalle.train import grad_cache
from megadalle.train.clip import ClipTask, embed, update_text
from megadalle.train.distributed import exit_process

from tests.sample.tiny_clip import TINY, batch

SAMPLE = torch.tensor([10, 11, 12, 13, 14, 11, 15, 10])
"""8 rows, samples 10 and 11 read twice: rows 0 and 7, 1 and 5 (across the halves a 2-rank run or a 2-micro-batch
update puts apart)."""


def with_copies(image: torch.Tensor, text: torch.Tensor, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The pairs with each copy holding its sample's first image and caption."""
    first = torch.tensor([int((sample == s).nonzero()[0]) for s in sample])
    return image[first], text[first]


def reference(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
    """Plain PyTorch: each pair's symmetric InfoNCE against itself and the first row of every other sample, row by
    row, averaged over the rows."""
    first = torch.tensor([int((sample == s).nonzero()[0]) for s in sample])
    terms = []
    for i in range(len(sample)):
        keep = ((sample != sample[i]) & (first == torch.arange(len(sample)))) | (torch.arange(len(sample)) == i)
        own = int(keep[:i].sum())
        to_captions = scale * img[i] @ txt[keep].t()
        to_images = scale * txt[i] @ img[keep].t()
        terms.append((F.cross_entropy(to_captions[None], torch.tensor([own]))
                      + F.cross_entropy(to_images[None], torch.tensor([own]))) / 2)
    return torch.stack(terms).mean()


def test_a_copy_is_no_negative_of_its_own_pair():
    torch.manual_seed(0)
    model = CLIP(TINY)
    image, text = with_copies(*batch(8), SAMPLE)
    loss, _ = model.loss(image, text, SAMPLE)
    img, txt, scale = model(image, text)
    torch.testing.assert_close(loss, reference(img, txt, scale, SAMPLE))
    # each row's loss is its sample's in the de-duplicated batch: the mean weighs a sample read twice twice
    unique = torch.tensor([0, 1, 2, 3, 4, 6])
    rows = F.cross_entropy(scale * img[unique] @ txt[unique].t(), torch.arange(6), reduction="none") \
        + F.cross_entropy(scale * txt[unique] @ img[unique].t(), torch.arange(6), reduction="none")
    weights = torch.tensor([2.0, 2, 1, 1, 1, 1])
    torch.testing.assert_close(loss, (rows * weights).sum() / 2 / weights.sum())
    unmasked, _ = model.loss(image, text)
    assert unmasked.item() > loss.item() + 0.1  # the copy as a negative: the pair's own caption counted against it


def test_without_copies_the_ids_change_no_bit():
    torch.manual_seed(0)
    image, text = batch(8)
    results = []
    for sample in (None, torch.arange(100, 108)):
        torch.manual_seed(0)
        model = CLIP(TINY)
        loss, metrics = model.loss(image, text, sample)
        loss.backward()
        results.append((loss.detach(), metrics, [p.grad.clone() for p in model.parameters()]))
    (loss, metrics, grads), (ided, ided_metrics, ided_grads) = results
    assert torch.equal(loss, ided) and metrics == ided_metrics
    assert all(torch.equal(a, b) for a, b in zip(grads, ided_grads))


def test_the_mask_leaves_out_each_rows_other_copies_and_every_later_copy():
    torch.manual_seed(0)
    sample, labels = torch.randint(0, 6, (16,)), torch.arange(4, 8)
    first = [int((sample == s).nonzero()[0]) for s in sample]
    expected = torch.tensor([[j != i and (sample[j] == sample[i] or first[j] != j) for j in range(16)]
                             for i in labels.tolist()])
    assert torch.equal(repeats(sample, labels), expected)


class LargestTensor(TorchDispatchMode):
    """The most elements of any tensor an operation makes while it is active."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        made = [t.numel() for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
        self.numel = max([self.numel, *made])
        return out


def test_the_mask_takes_memory_of_the_rows_times_the_batch_and_none_without_repeats():
    """A [global, global] comparison took 515 MiB at 16384 pairs, 8 GiB at 65536, every update, copies or not."""
    count, labels = 4096, torch.arange(8, 16)
    sample = torch.arange(count)
    with LargestTensor() as seen:
        assert repeats(sample, labels) is None
    assert seen.numel <= count
    sample[-1] = 9
    with LargestTensor() as seen:
        mask = repeats(sample, labels)
    assert mask.shape == (8, count) and seen.numel <= 8 * count
    assert mask[1].nonzero().flatten().tolist() == [count - 1] and mask[0, count - 1]


def test_gradient_caching_masks_a_copy_in_another_micro_batch():
    """grad_cache.update with ClipTask's inputs, the sample ids among them (as the update's token ids go): the loss and
    the gradients of the whole batch at once, the copies 0/7 and 1/5 in different micro-batches."""
    torch.manual_seed(0)
    model = CLIP(TINY)
    image, text = with_copies(*batch(8), SAMPLE)
    loss, _ = model.loss(image, text, SAMPLE)
    loss.backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()

    class Engine:  # DeepSpeed's engine as gradient caching calls it: backward divided by the accumulation steps
        def __call__(self, micro, step, run):
            return run(model, micro, step)

        def gradient_accumulation_steps(self):
            return 2

        def backward(self, value):
            (value / 2).backward()

        def step(self):
            pass

    micro = [{"image": image[rows], "text": text[rows], "sample": SAMPLE[rows]} for rows in (slice(0, 4), slice(4, 8))]
    metrics = grad_cache.update(Engine(), micro, 0, encode=embed, loss=contrastive_loss, inputs=update_text)
    assert metrics["loss"] == pytest.approx(loss.item(), rel=1e-6)
    for got, want in zip((p.grad for p in model.parameters()), expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_a_batch_without_sample_ids_is_refused_not_contrasted_unmasked():
    """ClipTask read the ids with .get(): had the loaders stopped naming them, copies were negatives again unseen."""
    torch.manual_seed(0)
    image, text = batch(4)
    with pytest.raises(KeyError, match="sample"):
        ClipTask(TINY, None, None).loss(CLIP(TINY), {"image": image, "text": text}, 0)
    with pytest.raises(KeyError, match="sample"):
        update_text([{"image": image, "text": text}])


def _rank(rank: int, world: int, rendezvous: str, out: str):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = CLIP(TINY)
    image, text = with_copies(*batch(8), SAMPLE)
    rows = slice(rank * 4, (rank + 1) * 4)
    loss, _ = model.loss(image[rows], text[rows], SAMPLE[rows])
    total = loss.detach().clone()
    dist.all_reduce(total)
    if rank == 0:
        torch.save({"loss": total / world}, out)
    exit_process(0)


@pytest.mark.distributed
def test_a_copy_on_another_rank_is_no_negative_either(tmp_path):
    out = str(tmp_path / "rank0.pt")
    mp.spawn(_rank, args=(2, str(tmp_path / "rendezvous"), out), nprocs=2, join=True)
    torch.manual_seed(0)
    model = CLIP(TINY)
    loss, _ = model.loss(*with_copies(*batch(8), SAMPLE), SAMPLE)
    torch.testing.assert_close(torch.load(out, weights_only=True)["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
