"""The wandb id of a run directory made before `wandb_id.json`: its own checkpoint's, or a new one when the
checkpoint it resumes belongs to another run (resume=<another run's step_N>)."""
from megadalle.train import wandb_log


def test_a_run_directory_without_a_record_keeps_its_own_checkpoints_id(tmp_path):
    (tmp_path / "checkpoints" / "step_00000002").mkdir(parents=True)
    assert wandb_log.run_id(tmp_path, "abcd1234") == ("abcd1234", None)
    assert wandb_log.run_id(tmp_path, "abcd1234") == ("abcd1234", None)  # recorded now: the same again


def test_a_new_run_directory_resuming_another_runs_checkpoint_takes_a_new_id(tmp_path):
    wandb_id, note = wandb_log.run_id(tmp_path, "abcd1234")
    assert wandb_id != "abcd1234" and note == (f"{tmp_path} resumes another run's checkpoint: it logs to a new "
                                               f"wandb run {wandb_id}, not to abcd1234")
    assert wandb_log.run_id(tmp_path, wandb_id) == (wandb_id, None)
