"""What a user of an elastic resume sees (train/universal.py), pinned where mutation testing found it unchecked: the
refusals' full advice (the rank counts and batch to resume with), which layouts convert, the converter's folder as
the run finds it (renamed whole, its pointer, rank 0's error for the waiting ranks), the waiting ranks' deadline,
the DeepSpeed keys a universal load builds with, and the ZeRO-3 optimizer repair against plain torch AdamW."""
import json
import subprocess
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from megadalle.config.train import DeepSpeedConfig, TrainerConfig
from megadalle.processes import owner_tag
from megadalle.train import universal
from megadalle.train.checkpoint import MANIFEST, CheckpointError
from megadalle.train.engine import ds_config
from megadalle.train.universal import Layout, needs_conversion


def refusal(saved: Layout, current: Layout, path) -> str:
    with pytest.raises(CheckpointError) as refused:
        needs_conversion(saved, current, path)
    return str(refused.value)


def test_another_global_batch_names_this_runs_ranks_and_the_per_rank_batch_that_keeps_the_saved_one(tmp_path):
    """Saved by 2 ranks with 8 samples an update, resumed on 4 ranks with 16: 8 / 4 = 2 samples a rank keep it."""
    message = refusal(Layout(2, 1, 2, 8), Layout(4, 1, 2, 16), tmp_path)
    assert message == (f"cannot resume {tmp_path}: it trained with a global batch of 8 samples, this run has 16 "
                       "(micro_batch * grad_accum * 4 data-parallel ranks); keep the global batch: "
                       "trainer.micro_batch * trainer.grad_accum = 2 (micro_batch x grad_accum: 1 x 2, 2 x 1)")


def test_another_pipeline_depth_is_refused_even_on_the_same_zero_stage(tmp_path):
    """A checkpoint of 1 stage resumed as 2 stages: its files are laid out per stage, no universal form helps."""
    message = refusal(Layout(2, 1, 1, 8), Layout(2, 2, 1, 8), tmp_path)
    assert message == (f"cannot resume {tmp_path}: it was saved with pipeline_stages=1, zero_stage=1, this run has "
                       "pipeline_stages=2, zero_stage=1; resume with the same deepspeed config")


def test_a_pipeline_on_fewer_data_parallel_ranks_names_both_sizes_and_its_rank_count(tmp_path):
    message = refusal(Layout(3, 2, 1, 6), Layout(1, 2, 1, 6), tmp_path)
    assert message.startswith(f"cannot resume {tmp_path} on 1 data-parallel ranks: it was saved by a pipeline with 3; "
                              "a pipeline run resumes only on the same number of ranks (6); ")


def test_zero_stage_0_names_the_rank_count_to_resume_on(tmp_path):
    message = refusal(Layout(2, 1, 0, 8), Layout(4, 1, 0, 8), tmp_path)
    assert message.startswith(f"cannot resume {tmp_path} on 4 data-parallel ranks: it was saved by ZeRO stage 0 on 2; ")
    assert message.endswith("; resume on 2 ranks")


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_every_sharded_zero_stage_converts_on_fewer_and_on_more_ranks(stage, tmp_path):
    for ranks in (1, 4):
        assert needs_conversion(Layout(2, 1, stage, 8), Layout(ranks, 1, stage, 8), tmp_path)


def test_the_layout_a_checkpoint_recorded_is_read_back(tmp_path):
    (tmp_path / MANIFEST).write_text(json.dumps({"layout": {"dp_world": 4, "pipeline_stages": 2, "zero_stage": 1,
                                                            "global_batch": 32}}))
    assert Layout.saved(tmp_path) == Layout(dp_world=4, pipeline_stages=2, zero_stage=1, global_batch=32)
    (tmp_path / MANIFEST).write_text(json.dumps({"step": 3}))  # saved before layouts were recorded
    assert Layout.saved(tmp_path) is None


def test_clear_stale_removes_the_notes_of_a_failed_and_of_a_stopped_conversion(tmp_path):
    (tmp_path / universal.FAILED).write_text("old failure")
    (tmp_path / universal.STOPPED).write_text("old stop")
    (tmp_path / "universal.tmp-other-host-1").mkdir()  # another host's: maybe a live conversion
    universal.clear_stale(tmp_path, owned=False)
    assert [p.name for p in tmp_path.iterdir()] == ["universal.tmp-other-host-1"]


@pytest.fixture
def converter(monkeypatch):
    """DeepSpeed's converter stood in for: `converter.fail` set, it exits 1 with `converter.out` and `err`;
    otherwise it writes its output folder (into what is there, as the real one does) and points its input's
    `latest_universal` at it, as the real one does. Records the folders it was given."""
    real = subprocess.run
    state = SimpleNamespace(fail=False, out="", err="", calls=[])

    def run(command, *args, **kwargs):
        if "deepspeed.checkpoint.ds_to_universal" not in command:
            return real(command, *args, **kwargs)
        source = Path(command[command.index("--input_folder") + 1])
        output = Path(command[command.index("--output_folder") + 1])
        state.calls.append((source, output))
        output.mkdir(exist_ok=True)
        if state.fail:
            (output / "partial").write_text("half")
            return subprocess.CompletedProcess(command, 1, state.out, state.err)
        (output / "zero").mkdir(exist_ok=True)
        (output / "zero" / "optimizer_state.pt").write_text("converted")
        (source / "latest_universal").write_text(output.name)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", run)
    return state


def test_a_conversion_is_renamed_whole_into_universal_and_its_pointer_names_it(tmp_path, converter):
    leftover = tmp_path / f"universal.tmp-{owner_tag()}"  # this very process's earlier try, killed (same tag)
    leftover.mkdir()
    (leftover / "junk").write_text("from the killed try")
    target = universal.convert(tmp_path)
    assert target == tmp_path / "universal"
    assert converter.calls == [(tmp_path, leftover)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest_universal", "universal"]
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == ["zero", "zero/optimizer_state.pt"]
    assert (tmp_path / "latest_universal").read_text() == "universal"
    assert universal.convert(tmp_path) == target and len(converter.calls) == 1  # converted once


def test_a_folder_already_converted_is_taken_as_it_is(tmp_path, monkeypatch):
    (tmp_path / "universal").mkdir()

    def never(path, target):
        raise AssertionError("converted again")

    monkeypatch.setattr(universal, "_convert", never)
    assert universal.convert(tmp_path) == tmp_path / "universal"


def test_a_failed_converter_is_refused_with_its_output_and_leaves_no_folder(tmp_path, converter):
    converter.fail, converter.out = True, "x" * 3000 + "END OF STDOUT"
    converter.err = "Traceback (most recent call last):\nValueError: shard 3 is short"
    with pytest.raises(CheckpointError) as failed:
        universal.convert(tmp_path)
    message = str(failed.value)
    assert message.startswith(f"DeepSpeed's ds_to_universal failed on {tmp_path}:\n")
    assert message.endswith("END OF STDOUT" + converter.err)
    assert len(message) == len(f"DeepSpeed's ds_to_universal failed on {tmp_path}:\n") + 2000 + len(converter.err)
    assert sorted(p.name for p in tmp_path.iterdir()) == [universal.FAILED]
    assert (tmp_path / universal.FAILED).read_text() == message  # the waiting ranks read its first line
    with pytest.raises(CheckpointError, match=f"rank 0 could not convert {tmp_path} to a universal checkpoint: "
                                              f"DeepSpeed's ds_to_universal failed on {tmp_path}: \\("):
        universal.wait_for(tmp_path, poll_seconds=0.001)


def test_the_waiting_ranks_wait_the_hours_they_are_given(tmp_path):
    """hours=2e-3 is 7.2 s: a conversion done after 1 s is waited for."""
    done = threading.Timer(1.0, lambda: (tmp_path / "universal").mkdir())
    done.start()
    try:
        assert universal.wait_for(tmp_path, hours=2e-3, poll_seconds=0.05) == tmp_path / "universal"
    finally:
        done.join()


def test_a_universal_load_keeps_the_runs_own_checkpoint_keys():
    trainer = TrainerConfig(micro_batch=2, grad_accum=1)
    plain = DeepSpeedConfig()
    assert ds_config(trainer, universal.loading_config(plain), 1, torch.float32)["checkpoint"] == \
        {"tag_validation": "FAIL", "load_universal": True}
    own = DeepSpeedConfig(extra={"checkpoint": {"tag_validation": "WARN", "load_universal": False},
                                 "wall_clock_breakdown": True})
    loading = universal.loading_config(own)
    assert loading.extra == {"checkpoint": {"tag_validation": "WARN", "load_universal": True},
                             "wall_clock_breakdown": True}
    assert own.extra["checkpoint"]["load_universal"] is False  # the run's config is not changed under it


def adamw(weight, bias) -> torch.optim.AdamW:
    """megadalle's two groups (engine.param_groups): the matrix decays, the bias does not."""
    return torch.optim.AdamW([{"params": [weight], "weight_decay": 0.5}, {"params": [bias], "weight_decay": 0.0}],
                             lr=0.1, betas=(0.8, 0.9), foreach=False)


def steps(optimizer, weight, bias, grads) -> None:
    for gw, gb in grads:
        weight.grad, bias.grad = gw.clone(), gb.clone()
        optimizer.step()


def loaded_as_deepspeed_does(tmp_path):
    """(weight, bias, optimizer, universal folder, grads, uninterrupted weight and bias): the optimizer after 2 of 4
    updates, loaded as DeepSpeed 0.19.8's ZeRO-3 universal load leaves it (one step tensor shared by every group's
    state, the first group's hyperparameters in every group), and the universal folder's saved optimizer groups."""
    torch.manual_seed(0)
    start_w, start_b = torch.randn(3, 4), torch.randn(4)
    grads = [(torch.randn(3, 4), torch.randn(4)) for _ in range(4)]
    weight, bias = start_w.clone().requires_grad_(), start_b.clone().requires_grad_()
    reference = adamw(weight, bias)
    steps(reference, weight, bias, grads)
    uninterrupted = weight.detach().clone(), bias.detach().clone()

    weight, bias = start_w.clone().requires_grad_(), start_b.clone().requires_grad_()
    first = adamw(weight, bias)
    steps(first, weight, bias, grads[:2])
    saved = first.state_dict()
    folder = tmp_path / "universal"
    (folder / "zero").mkdir(parents=True)
    torch.save({"optimizer_state_dict": {"param_groups": saved["param_groups"]}},
               folder / "zero" / "optimizer_state.pt")

    weight, bias = weight.detach().clone().requires_grad_(), bias.detach().clone().requires_grad_()
    resumed = adamw(weight, bias)
    shared = torch.tensor(2.0)
    for param, index in ((weight, 0), (bias, 1)):
        resumed.state[param] = {"step": shared, "exp_avg": saved["state"][index]["exp_avg"].clone(),
                                "exp_avg_sq": saved["state"][index]["exp_avg_sq"].clone()}
    resumed.param_groups[1].update({k: v for k, v in resumed.param_groups[0].items() if k != "params"})
    return weight, bias, resumed, folder, grads, uninterrupted


def test_the_zero3_repair_resumes_exactly_as_the_uninterrupted_adamw(tmp_path):
    weight, bias, resumed, folder, grads, (ref_w, ref_b) = loaded_as_deepspeed_does(tmp_path)
    universal.repair_zero3_optimizer(SimpleNamespace(optimizer=resumed), folder)
    assert [g["weight_decay"] for g in resumed.param_groups] == [0.5, 0.0]
    assert resumed.param_groups[0]["params"] == [weight] and resumed.param_groups[1]["params"] == [bias]
    steps(resumed, weight, bias, grads[2:])
    assert torch.equal(weight.detach(), ref_w) and torch.equal(bias.detach(), ref_b)
    assert [resumed.state[p]["step"].item() for p in (weight, bias)] == [4.0, 4.0]


def test_without_the_repair_the_resumed_adamw_drifts(tmp_path):
    """The damage the repair undoes is real: left as loaded, the updates after the resume differ."""
    weight, bias, resumed, _, grads, (ref_w, ref_b) = loaded_as_deepspeed_does(tmp_path)
    steps(resumed, weight, bias, grads[2:])
    assert not torch.equal(weight.detach(), ref_w) and not torch.equal(bias.detach(), ref_b)


def test_the_zero3_repair_refuses_a_checkpoint_of_other_parameter_groups(tmp_path):
    weight, bias, resumed, folder, _, _ = loaded_as_deepspeed_does(tmp_path)
    saved = torch.load(folder / "zero" / "optimizer_state.pt", weights_only=True)
    saved["optimizer_state_dict"]["param_groups"] = saved["optimizer_state_dict"]["param_groups"][:1]
    torch.save(saved, folder / "zero" / "optimizer_state.pt")
    with pytest.raises(CheckpointError, match=f"cannot resume from {folder}: it holds 1 optimizer parameter groups, "
                                              "this model has 2$"):
        universal.repair_zero3_optimizer(SimpleNamespace(optimizer=resumed), folder)
