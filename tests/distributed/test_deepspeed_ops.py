"""Starting a CPU process group compiles nothing (megadalle.train.distributed._skip_shm_inference_op).

DeepSpeed would build its shared-memory all-reduce, which only inference uses, the first time a
process group starts on the CPU accelerator: ~80 s of C++ on 2 cores added to a first demo or test.
"""
import subprocess
import sys

import pytest

import dist_launch as launch


@pytest.mark.distributed
def test_a_cpu_process_group_compiles_no_deepspeed_op(tmp_path):
    script = ("from megadalle.train.distributed import detect, init; init(detect({})); "
              "from deepspeed.comm import comm; print('shm op:', comm.cdb.shm_comm_op)")
    extensions = tmp_path / "extensions"
    env = dict(launch.base_env(), TORCH_EXTENSIONS_DIR=str(extensions))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "shm op: None" in done.stdout
    assert not list(extensions.rglob("*.so")) if extensions.exists() else True
