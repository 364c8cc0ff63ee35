"""Zero-shot tasks through lm-evaluation-harness, on the in-memory (compressed) model.

lm-eval's `wikitext` task reports *word* perplexity over whole documents; it is recorded as its
own metric and never mixed with the GPTQ-protocol token perplexity."""
from __future__ import annotations

from typing import Any

STANDARD_SUITE = ("boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")


class ZeroShotUnavailable(RuntimeError):
    pass


def zeroshot(model, tokenizer, tasks: list[str], batch_size: int = 8, limit: int | float | None = None,
             include_path: str | None = None, device: str = "cpu", seed: int = 0) -> dict[str, dict[str, Any]]:
    """lm_eval.simple_evaluate on the given model object; returns {task: {metric: value}}."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device)
    manager = TaskManager(include_path=include_path) if include_path else TaskManager()
    try:
        out = simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, limit=limit, bootstrap_iters=0,
                              log_samples=False, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed)
    except ConnectionError as err:
        raise ZeroShotUnavailable(
            f"lm-eval could not fetch the data of {list(tasks)} ({err}). Its tasks download their datasets from "
            f"the Hugging Face Hub: run online, or define a local task (a YAML with dataset_path: json and "
            f"data_files) and pass its folder as eval.zeroshot.include_path.") from None
    results = {}
    for task, metrics in out["results"].items():
        results[task] = {k.split(",")[0]: v for k, v in metrics.items()
                         if k != "alias" and not k.split(",")[0].endswith("_stderr")}
    return results
