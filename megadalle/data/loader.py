"""Step-indexed, rank-aware, resumable loaders over shard directories (levanter / OLMo-core style).

    loader = image_loader("shards/", global_batch=64, image_size=256, seed=0)      # dVAE, CLIP
    loader = token_loader("tokens/", global_batch=64, tokenizer=tok, text_len=256)  # Transformer
    # every batch also holds `sample`: LongTensor[b], the global sample id of each row (see below)
    for batch in loader:                 # this rank's micro-batches, step by step; loader.step advances
        ...
    ckpt["data"] = loader.state_dict()   # step, epoch, samples_seen, global_batch, seed, shuffle, fingerprint
                                         # (or loader.state_at(step) where the trainer counts the steps)
    loader.load_state_dict(ckpt["data"]) # checks the data and seed, then the next iteration starts there
    loader.iter_from_step(n)             # or start at any step directly
    # a training task: Task.batches(start, part) ->
    loader_from_config(cfg.data, part.global_batch, seed, rank=part.dp_rank, world_size=part.dp_world,
                       grad_accum=part.grad_accum, text_len=...).iter_from_step(start)

What a rank gets (see `order.py`): step s's global batch is stream positions [s*B, (s+1)*B);
position p reads sample permute(p % N) of epoch p // N, a seeded permutation of all N samples.
The batch is cut into R = w x A strided micro-batches (w ranks, A gradient-accumulation steps):
micro-batch i takes positions i, i+R, ...; rank r reads micro-batches r, w+r, 2w+r, ... in turn
(as megadalle.train.task.DataPart.reader), each of B/R samples (B must divide by R). So one rank
accumulating 2 micro-batches reads what 2 ranks read without accumulation, and the samples of a
global batch depend on nothing but (seed, step, B): resuming at step s on another number of ranks
with the same global batch gives every later global batch the same samples (elastic), and every
epoch sees each sample exactly once. A batch's `sample` names each row's sample by its global id: a global batch
straddling an epoch boundary may hold one twice, and CLIP's contrastive loss must not take one copy for a negative
of the other (models/clip.py `contrastive_loss`). A full permutation replaces webdataset's shuffle buffer: it
mixes strictly better, and it is what makes a position addressable. `shuffle_window=W` trades
mixing for locality (shards in seeded order, samples permuted within runs of W; see order.py).

A directory of tars written elsewhere (img2dataset, webdataset's TarWriter) with no index.json is
indexed on first use, every sample checked (`ingest.open_index`; `megadalle index` does it ahead).

Shards are not assigned to ranks or workers: every rank reads the samples its positions name, from
whichever shard holds them (random access through the offset files, `reader.SampleReader`). So the
number of shards never needs to divide ranks x workers: with 1 shard and 8 ranks x 4 workers, every
rank still gets B/R samples per micro-batch at every step; no rank waits or gets an empty stream.

DataLoader workers split steps, not samples: worker k of K builds (all micro-batches of) steps
start+k, start+k+K, ... and the DataLoader returns them in step order, so the worker count
changes speed only.

By default the stream is infinite (the trainer decides when to stop). With `epochs=E` it ends
after E*N samples; the last global batch is then partial, and a rank whose micro-batches in it are
empty stops one step before the others: use it for one pass such as `encode`, not for training
with collectives.
"""
from __future__ import annotations

import itertools
import math
import os
import signal
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from megadalle.config.data import DataConfig
from megadalle.data.batches import BatchMaker, ImageBatches, TokenBatches, UnreadableSample, sample_name
from megadalle.data.fields import IMAGE_FIELDS
from megadalle.data.order import Order, reader_positions
from megadalle.data.shards import SampleReader, ShardIndex, open_index
from megadalle.errors import UserError
from megadalle.local_gpu import launched
from megadalle.seeds import derived_seed


def ignore_stop_signals(worker_id: int) -> None:
    """A stop signal is the trainer's: it finishes the update, checkpoints and exits, and needs the data to the
    end of the update. torch's workers die on a SIGTERM from anyone but their loader, and torchrun, Slurm
    (scancel, preemption) and `timeout` signal the whole process group: the loader then failed mid-update and
    nothing was saved. So workers ignore INT and USR1, and take a SIGTERM only from their parent (the loader
    shutting them down, or multiprocessing at the interpreter's exit, which waits for them: a worker deaf to
    it hung the exit), read with its sender from a thread while the signal stays blocked."""
    for sig in (signal.SIGINT, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    parent = os.getppid()

    def from_parent_only() -> None:
        while signal.sigwaitinfo({signal.SIGTERM}).si_pid != parent:
            pass
        os._exit(0)  # as torch's own worker handler exits on its parent's SIGTERM

    threading.Thread(target=from_parent_only, name="sigterm-from-parent", daemon=True).start()


class LoaderStateError(UserError, ValueError):
    """A saved loader position that does not fit this loader (other data, seed or global batch)."""


@dataclass
class LoaderState:
    """What a checkpoint stores to resume the data stream exactly."""

    step: int
    """Next step to produce (the number of steps consumed so far)."""
    epoch: int
    """Epoch of the next sample (informational: derived from step)."""
    samples_seen: int
    """Global samples consumed: step * global_batch."""
    global_batch: int
    seed: int
    shuffle: bool
    fingerprint: str
    """ShardIndex.fingerprint of the data set; resuming on other data is an error."""
    shuffle_window: int | None = None


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) from the launcher's variables (local_gpu.launched), else (0, 1)."""
    rank, world, _ = launched()
    return rank, world


class _Steps(IterableDataset):
    """Runs in each DataLoader worker: builds (step, [micro-batches]) for the steps this worker owns."""

    def __init__(self, plan: "StepLoader", start: int):
        self.plan, self.start = plan, start

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        plan = self.plan
        reader = SampleReader(plan.index)
        try:
            first, stop = self.start + worker, plan.stop_step
            for step in itertools.count(first, workers) if stop is None else range(first, stop, workers):
                micro = []
                for accum in range(plan.grad_accum):
                    positions = plan.positions(step, accum)
                    if positions.size == 0:
                        break
                    ids = plan.order.ids(positions)
                    samples = reader.read_many(ids, plan.maker.fields, decode=False, required=plan.maker.required)
                    try:
                        micro.append({**plan.maker(samples, positions, plan.seed), "sample": torch.from_numpy(ids)})
                    except UnreadableSample as err:
                        shard = plan.index.shards[int(plan.index.locate(np.asarray(ids)[[err.position]])[0][0])].name
                        raise RuntimeError(f"{sample_name(plan.index.root / shard, err.key)}: step {step}, micro-batch "
                                           f"{accum}: {err}") from err
                    except Exception as err:
                        keys = [s["__key__"] for s in samples]
                        raise RuntimeError(f"{plan.index.root}: step {step}, micro-batch {accum} (samples {keys}): "
                                           f"{type(err).__name__}: {err}") from err
                if micro:
                    yield step, micro
                if len(micro) < plan.grad_accum:
                    return
        finally:
            reader.close()


class StepLoader:
    """This rank's micro-batches by step over one shard directory; see the module docstring for the order.

    `rank`/`world_size` default to the environment's (`rank_and_world`); under pipeline or tensor
    parallelism pass the data-parallel rank and size. Each step yields `grad_accum` micro-batches.
    `root` is the shard directory, or its index as the caller opened it (`opened`).
    """

    def __init__(self, root: str | Path | ShardIndex, global_batch: int, maker: BatchMaker, *, seed: int = 0,
                 shuffle: bool = True, rank: int | None = None, world_size: int | None = None,
                 grad_accum: int = 1, shuffle_window: int | None = None, num_workers: int = 0,
                 prefetch_factor: int = 2, epochs: int | None = None, pin_memory: bool = False):
        env_rank, env_world = rank_and_world()
        self.rank = env_rank if rank is None else rank
        self.world_size = env_world if world_size is None else world_size
        self.grad_accum = grad_accum
        readers = self.world_size * grad_accum
        if grad_accum < 1 or global_batch < 1 or global_batch % readers:
            raise ValueError(f"global_batch={global_batch} must be a positive multiple of world_size x grad_accum = "
                             f"{self.world_size} x {grad_accum}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank={self.rank} must be in [0, world_size={self.world_size})")
        if epochs is not None and epochs < 1:
            raise ValueError(f"epochs={epochs} must be a positive integer or None (infinite)")
        self.index = opened(root)
        self.global_batch, self.maker, self.seed, self.shuffle = global_batch, maker, seed, shuffle
        self.shuffle_window = shuffle_window
        self.order = Order([s.count for s in self.index.shards], seed, shuffle, shuffle_window)
        self.num_workers, self.prefetch_factor, self.pin_memory = num_workers, prefetch_factor, pin_memory
        self.epochs = epochs
        self.step = 0

    @property
    def micro_batch(self) -> int:
        """Samples per micro-batch: global_batch / (world_size x grad_accum)."""
        return self.global_batch // (self.world_size * self.grad_accum)

    @property
    def stop_step(self) -> int | None:
        """First step not produced, or None for an infinite stream."""
        return None if self.epochs is None else math.ceil(self.epochs * self.index.total / self.global_batch)

    def positions(self, step: int, accum: int = 0) -> np.ndarray:
        """Stream positions of this rank's micro-batch `accum` of `step` (cut after the last epoch, if any)."""
        reader = accum * self.world_size + self.rank
        pos = reader_positions(step, self.global_batch, reader, self.world_size * self.grad_accum)
        return pos if self.epochs is None else pos[pos < self.epochs * self.index.total]

    def sample_ids(self, step: int, accum: int = 0) -> np.ndarray:
        """Global sample ids of this rank's micro-batch `accum` of `step`, without reading them."""
        return self.order.ids(self.positions(step, accum))

    def iter_from_step(self, step: int) -> Iterator[dict[str, Any]]:
        """Micro-batches from `step` on; `self.step` becomes s + 1 once step s's last one is handed out."""
        if step < 0:
            raise ValueError(f"step={step} must be >= 0")
        self.step = step
        stream = _Steps(self, step)
        if self.num_workers == 0:
            batches = iter(stream)
        else:  # its own generator: see `worker_seeds`
            batches = iter(DataLoader(stream, batch_size=None, num_workers=self.num_workers,
                                      prefetch_factor=self.prefetch_factor, pin_memory=self.pin_memory,
                                      generator=worker_seeds(self.seed, step), worker_init_fn=ignore_stop_signals))
        for got, micro in batches:
            if got != self.step:
                raise RuntimeError(f"data loader produced step {got} where step {self.step} was due")
            for i, batch in enumerate(micro):
                if i == len(micro) - 1:
                    self.step = got + 1
                yield batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.iter_from_step(self.step)

    def state_dict(self) -> dict[str, Any]:
        """The position to checkpoint: the next step, with what a resume must match."""
        return self.state_at(self.step)

    def state_at(self, step: int) -> dict[str, Any]:
        """The state this loader would have before producing `step` (for a trainer that counts steps itself)."""
        samples = step * self.global_batch
        if self.epochs is not None:
            samples = min(samples, self.epochs * self.index.total)
        return asdict(LoaderState(step, samples // self.index.total, samples, self.global_batch,
                                  self.seed, self.shuffle, self.index.fingerprint, self.shuffle_window))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at the saved step; the data, seed, shuffle and global batch must match (ranks may differ)."""
        saved = LoaderState(**state)
        for name, mine in (("fingerprint", self.index.fingerprint), ("seed", self.seed), ("shuffle", self.shuffle),
                           ("shuffle_window", self.shuffle_window), ("global_batch", self.global_batch)):
            if getattr(saved, name) != mine:
                raise LoaderStateError(
                    f"cannot resume the data stream: checkpoint has {name}={getattr(saved, name)!r}, this loader "
                    f"has {name}={mine!r} (data {self.index.root}); an exact resume needs the same data set, "
                    f"seed, shuffle, shuffle window and global batch (the number of ranks may change)")
        self.step = saved.step


def opened(root: str | Path | ShardIndex) -> ShardIndex:
    """The index to read: one given as it is (a training run's, whose identity the ranks checked: opening the folder
    again could index it again, changed meanwhile), a folder's opened (`ingest.open_index`)."""
    return root if isinstance(root, ShardIndex) else open_index(root)


def image_fields(index: ShardIndex) -> tuple[str, ...]:
    """The image fields of an image shard directory (jpg, png, ...): every one its samples carry, since a
    directory from elsewhere may mix them (`batches.sample_image` takes each sample's own)."""
    found = tuple(f for f in IMAGE_FIELDS if f in index.fields)
    if not found:
        raise ValueError(f"{index.root}: no image field among {index.fields} (expected one of {IMAGE_FIELDS})")
    return found


def image_loader(root: str | Path | ShardIndex, global_batch: int, image_size: int, captions: bool = True,
                 **kwargs) -> StepLoader:
    """Image batches dict(image=FloatTensor[b, 3, S, S] in [0, 1], caption, txt, key: list[str], sample),
    b = micro_batch (without caption and txt where `captions` is False: ImageBatches).

    For one pass in shard order (e.g. `encode`): shuffle=False, epochs=1 (the last batch may be short).
    """
    index = opened(root)
    return StepLoader(index, global_batch, ImageBatches(image_size, image_fields(index), captions), **kwargs)


def token_loader(root: str | Path | ShardIndex, global_batch: int, tokenizer, text_len: int, bpe_dropout: float = 0.0,
                 **kwargs) -> StepLoader:
    """Token batches dict(text=LongTensor[b, text_len], image=LongTensor[b, H*W], sample), with a data.tokenizer.Tokenizer."""
    return StepLoader(root, global_batch, TokenBatches(tokenizer, text_len, bpe_dropout), **kwargs)


def worker_seeds(seed: int, step: int) -> torch.Generator:
    """The generator a DataLoader draws its workers' base seed from, when it starts at `step`.

    Without one, DataLoader draws that seed from torch's global generator when its iterator starts: one
    draw at step 0 in an uninterrupted run, one at step N after a resume has restored the generator, so
    every random number the training takes after it (the dVAE's Gumbel noise, dropout) came out
    different from the uninterrupted run's, and the run's outcome depended on num_workers. The samples
    themselves never used the workers' seeds (each one is seeded by its position, batches.sample_rng).
    """
    return torch.Generator().manual_seed(derived_seed(seed, step))


def loader_from_config(cfg: DataConfig, global_batch: int, seed: int, *, text_len: int | None = None,
                       image_size: int | None = None, captions: bool = True, index: ShardIndex | None = None,
                       **kwargs) -> StepLoader:
    """A loader for the `data` group: token batches when `cfg.tokenizer` is set (needs text_len), else images
    (with their captions unless `captions` is False: the dVAE's).

    `image_size` (e.g. the dVAE's) applies when cfg.image_size is null; with both null the stored size is kept.
    `index` is cfg.shards' index as the caller opened it (a training run's `ShardsTask.shard_index`); None: opened
    here.
    """
    common = dict(seed=seed, shuffle=cfg.shuffle, shuffle_window=cfg.shuffle_window, num_workers=cfg.num_workers,
                  prefetch_factor=cfg.prefetch_factor)
    common.update(kwargs)
    if index is None:  # a one-line error naming the key; tars from elsewhere indexed
        index = open_index(cfg.shards, "data.shards")
    if cfg.tokenizer:
        if text_len is None:
            raise ValueError("loader_from_config: token shards need text_len (the model's)")
        from megadalle.data.tokenizer import Tokenizer

        return token_loader(index, global_batch, Tokenizer(cfg.tokenizer), text_len, cfg.bpe_dropout, **common)
    size = cfg.image_size or image_size or index.meta.get("image_size")
    if not size:
        raise ValueError(f"{cfg.shards}: index.json has no meta.image_size; set data.image_size")
    return image_loader(index, global_batch, int(size), captions, **common)
