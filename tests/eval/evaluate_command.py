"""The `evaluate` command line over a tiny model folder holding `captions.txt`, without FID, on the CPU.

A helper, not a test module: evaluate's reruns, its captions and a stopped sweep's continuation run the same
command, and none of those test modules should be another's library.
"""


def evaluate_args(models, *more):
    return ["evaluate", f"weights={models / 'model.safetensors'}", f"captions={models / 'captions.txt'}", "fid=false",
            "device=cpu", *more]
