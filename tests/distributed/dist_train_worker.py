"""One rank of `megadalle train` (the tiny Transformer) that also records the trained model's logits.

`python dist_train_worker.py '{"overrides": [...], "probe": "<path>"}'`: trains through the same
`train_from_config` as the CLI, then runs a fixed probe batch through the trained model still
inside DeepSpeed and saves the logits (rank 0 under ZeRO, the last stage under a pipeline), for
comparison with the exported weights.
"""
import json
import sys

import torch

from megadalle.config.compose import compose
from megadalle.train.distributed import exit_process
from megadalle.train.loop import train_from_config
from megadalle.train.transformer import FACTORY, task_from_config


def probe_batch(cfg) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    text = torch.randint(1, 30, (2, cfg.model.text_len), generator=g)
    text[:, -3:] = 0
    image = torch.randint(0, cfg.model.image_vocab, (2, cfg.model.grid_size ** 2), generator=g)
    return text, image


def main(opts: dict) -> None:
    cfg = compose("train", opts["overrides"])
    result = train_from_config(task_from_config(cfg), cfg, FACTORY)
    text, image = probe_batch(cfg)
    engine = result.engine
    if cfg.deepspeed.pipeline_stages > 1:
        if opts.get("record_checkpointing"):  # which of this stage's layers the backward recomputes
            module = engine.module
            spans = [bool(c) for c in module.is_checkpointable_results] if module.activation_checkpoint_interval else []
            layers = [type(layer).__name__ for layer in module.forward_funcs]
            with open(f"{opts['probe']}.rank{engine.global_rank}.json", "w") as f:
                json.dump({"layers": layers, "recomputed": spans}, f)
        assert cfg.trainer.micro_batch == len(text), (  # else rank 1 aborted in gloo, or both ranks hung
            f"the pipeline's probe is {len(text)} samples and DeepSpeed sizes its buffers by trainer.micro_batch")
        engine.eval()
        batch = ((text, image), (text, image))
        _, logits = engine.eval_batch(iter([batch] * engine.micro_batches), return_logits=True)
        if engine.is_last_stage():
            torch.save({"text": logits[0], "image": logits[1]}, opts["probe"])
        return
    result.model.eval()
    with torch.no_grad():
        text_logits, image_logits = result.model(text, image)
    if engine.global_rank == 0:
        torch.save({"text": text_logits, "image": image_logits}, opts["probe"])


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
    exit_process(0)
