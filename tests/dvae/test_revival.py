"""Dead-code revival (dvae.objective.revive_every): dead codes become copies of live ones in the encoder's
logits, the decoder's embedding and Adam's moments, the live codes keep their shares of each cell, the EMA takes the
revived codes at once; and a run that revives resumes exactly."""
import json
from types import SimpleNamespace

import pytest
import torch

from megadalle.config.compose import compose
from megadalle.config.dvae import DVAEConfig, DVAEObjective
from megadalle.models.dvae import DVAE
from megadalle.train.dvae import CodeRevival, train_dvae
from megadalle.train.ema import EMA
from megadalle.train.param_edit import ParamEditor

from .conftest import rectangles

VOCAB, EVERY = 32, 4


def trained(seed: int = 0):
    """A small dVAE after one AdamW step (so every parameter has its moments), and its optimizer."""
    torch.manual_seed(seed)
    model = DVAE(DVAEConfig(image_size=16, n_hid=8, n_blk_per_group=1, n_groups=2, vocab_size=VOCAB, n_init=8,
                            objective=DVAEObjective(revive_every=EVERY, revive_until=100)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    logits, stats = model(rectangles(4, 16), tau=1.0)
    (logits.square().mean() + stats.square().mean()).backward()
    opt.step()
    return model, opt


def revive(model, opt, live: list[int], step: int = EVERY - 1, until: int = 100, ema: EMA | None = None
           ) -> tuple[CodeRevival, int]:
    revival = CodeRevival(VOCAB, EVERY, until, seed=0)
    counts = torch.bincount(torch.tensor(live * 10), minlength=VOCAB)
    editor = ParamEditor(SimpleNamespace(optimizer=opt), zero_stage=0, ema=ema)
    return revival, revival.after_update(model, editor, step, counts)


def test_dead_codes_become_copies_of_live_codes_that_keep_their_shares():
    model, opt = trained()
    live = [0, 1, 2, 5]
    enc, emb = model.encoder.net[-1], model.decoder.embedding
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    moments = {name: opt.state[p]["exp_avg_sq"].clone() for name, p in model.named_parameters()}
    images = rectangles(8, 16, seed=3)
    with torch.no_grad():
        probs_before = model.logits(images).softmax(1)
    revival, revived = revive(model, opt, live)
    assert revived == VOCAB - len(live) and revival.counts.sum() == 0
    dead = [k for k in range(VOCAB) if k not in live]
    w_before, w = before["encoder.net.3.weight"][:, :, 0, 0], enc.weight.detach()[:, :, 0, 0]
    e_before, e = before["decoder.embedding.weight"][:, :, 0, 0], emb.weight.detach()[:, :, 0, 0]
    for k in dead:
        donor = next((c for c in live if torch.equal(e[:, k], e_before[:, c])), None)
        assert donor is not None, "the embedding column is a live code's"
        assert torch.allclose(w[k], w_before[donor], atol=0.05 * w_before[donor].abs().max()), "a noisy copy"
        assert not torch.equal(w[k], w_before[donor])
        m = opt.state[enc.weight]["exp_avg_sq"][k]
        assert torch.equal(m, moments["encoder.net.3.weight"][donor]), "Adam's moments are the donor's"
    with torch.no_grad():
        probs_after = model.logits(images).softmax(1)
    among_live = probs_before[:, live] / probs_before[:, live].sum(1, keepdim=True)
    for i, code in enumerate(live):  # a donor and its copies hold the donor's share among the live codes
        family = [code] + [k for k in dead if torch.equal(e[:, k], e_before[:, code])]
        assert torch.allclose(probs_after[:, family].sum(1), among_live[:, i], rtol=0.02, atol=1e-5)
    untouched = [n for n in before if n not in ("encoder.net.3.weight", "encoder.net.3.bias",
                                                "decoder.embedding.weight")]
    assert all(torch.equal(before[n], dict(model.named_parameters())[n]) for n in untouched)


def test_the_ema_of_a_revived_code_is_the_live_one_on_each_ranks_piece():
    """The EMA restarts at the revived values (rows, bias, embedding column), on each data-parallel rank's piece;
    what the revival left alone keeps its average. Averaged in at 1 - decay per update, the exported EMA saw a
    revival only ~1 / (1 - decay) updates later (one code in use of 128 where the live weights had 12)."""
    live, dead = [0, 1, 2, 5], [k for k in range(VOCAB) if k not in (0, 1, 2, 5)]
    edited = {"encoder.net.3.weight": (0, dead), "encoder.net.3.bias": (0, range(VOCAB)),  # every live code donates
              "decoder.embedding.weight": (1, dead)}
    averages = {}
    for rank in (0, 1):  # each rank's own model, EMA piece and revival, as every rank runs them
        model, opt = trained()
        ema = EMA(model.named_parameters(), 0.999, rank, 2)
        with torch.no_grad():  # the average and the live weights part: the EMA lags them
            for p in model.parameters():
                p.add_(1.0)
        ema.update(5000)
        lagging = {name: t.clone() for name, t in ema.shadow.items()}
        revive(model, opt, live, ema=ema)
        for name, piece in ema.pieces.items():
            full = averages.setdefault(name, torch.full((piece.param.numel(),), float("nan")))
            full[piece.start:piece.start + piece.length] = ema.shadow[name]
            if name not in edited:
                assert torch.equal(ema.shadow[name], lagging[name]), name
    params = dict(model.named_parameters())
    for name, (dim, codes) in edited.items():
        average, value = averages[name].view_as(params[name]), params[name].detach()
        codes = torch.tensor(list(codes))
        torch.testing.assert_close(average.index_select(dim, codes), value.index_select(dim, codes), rtol=0, atol=0)
        if name != "encoder.net.3.bias":  # a live code's rows: not edited, their average still lags (by ~1)
            kept = torch.tensor(live)
            assert (average.index_select(dim, kept) - value.index_select(dim, kept)).abs().min() > 0.9


def test_no_revival_between_windows_after_revive_until_or_without_dead_codes():
    model, opt = trained()
    for step, until, live in ((EVERY - 2, 100, [0]), (EVERY - 1, EVERY - 2, [0]), (EVERY - 1, 100, list(range(VOCAB)))):
        before = model.encoder.net[-1].weight.detach().clone()
        assert revive(model, opt, live, step, until)[1] == 0
        assert torch.equal(before, model.encoder.net[-1].weight)


def test_the_same_counts_and_step_draw_the_same_donors():
    """Every rank draws its own donors: they must agree, from the counts and the step alone."""
    a, opt_a = trained()
    b, opt_b = trained()
    revive(a, opt_a, [3, 4, 9])
    revive(b, opt_b, [3, 4, 9])
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_zero3_is_refused_before_training(tmp_path, image_shards, capsys):
    from megadalle.cli import main

    code = main(["train-dvae", f"data.shards={image_shards}", "dvae=tiny", "dvae.objective.revive_every=10",
                 "dvae.objective.revive_until=20", "deepspeed=zero3", f"run_dir={tmp_path / 'run'}"])
    assert code == 2 and "dvae.objective.revive_every=10: reviving codes rewrites parameters between updates, which " \
        "needs deepspeed.zero_stage <= 2" in capsys.readouterr().err


def test_revive_every_without_a_revive_until_that_reaches_it_is_refused(tmp_path, image_shards, capsys):
    """revive_until is 0 by default: `revive_every=N` alone trained without a single revival, in silence."""
    from megadalle.cli import main

    code = main(["train-dvae", f"data.shards={image_shards}", "dvae=tiny", "dvae.objective.revive_every=10",
                 f"run_dir={tmp_path / 'run'}"])
    assert code == 2 and capsys.readouterr().err == (
        "megadalle train-dvae: dvae.objective.revive_until=0: is below dvae.objective.revive_every=10: no update "
        "would revive a code; set dvae.objective.revive_until to the last update that may (before the end of "
        "training)\n")
    assert not (tmp_path / "run").exists()


def run(tmp_path, image_shards, name: str, resume: str = "never") -> list[dict]:
    overrides = [f"data.shards={image_shards}", "data.num_workers=0", "dvae=tiny", "dvae.n_hid=16",
                 f"dvae.vocab_size={VOCAB}", "dvae.objective.revive_every=3", "dvae.objective.revive_until=7",
                 "trainer.steps=8", "trainer.micro_batch=4", "trainer.lr=3e-3", "trainer.checkpoint_every=2",
                 "trainer.keep_checkpoints=0", "trainer.ema=null", "logger=none", "deepspeed.zero_stage=0",
                 f"run_dir={tmp_path / name}", f"resume={resume}"]
    train_dvae(compose("train-dvae", overrides))
    records = {}
    for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        records[record["step"]] = record
    return [records[s] for s in sorted(records)]


def test_a_run_that_revives_resumes_exactly(tmp_path, image_shards):
    """Resumed after update 4, between the revivals after updates 3 and 6: the count of update 4 comes back
    from the checkpoint, so the second revival draws what the uninterrupted run drew."""
    whole = run(tmp_path, image_shards, "whole")
    assert [r["step"] for r in whole if r["revived_codes"]] == [2, 5], "both revivals must revive codes"
    resumed = run(tmp_path, image_shards, "resumed", resume=str(tmp_path / "whole" / "checkpoints" / "step_00000004"))
    assert [r["step"] for r in resumed] == list(range(4, 8))
    for a, b in zip(whole[4:], resumed):
        assert (a["loss"], a["revived_codes"]) == pytest.approx((b["loss"], b["revived_codes"]), rel=1e-6)
