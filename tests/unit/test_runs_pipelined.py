"""Whether a task runs pipelined is the task's answer (it overrides `Task.pipeline`), asked of its class by preflight
and of the task by the engine: the refusals of `deepspeed.pipeline_stages` cannot disagree."""
from megadalle.train.task import Task, runs_pipelined


class Plain(Task):
    pass


class Staged(Plain):
    def pipeline(self):
        raise AssertionError("asked to build its stages")


def test_a_task_runs_pipelined_where_it_overrides_pipeline_and_is_not_built_to_say_so():
    assert [runs_pipelined(task) for task in (Task, Plain, Staged, Plain(), Staged())] == \
        [False, False, True, False, True]
