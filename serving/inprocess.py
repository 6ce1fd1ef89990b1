"""An in-process transformers backend behind the same `LLMBackend` Protocol.

For a GPU box without a server and as the CPU fallback when the vLLM server
environment cannot be built. Concurrent greedy text requests are batched
(left padding) by one worker, which is where most of the throughput on CPU
comes from; image requests and sampled requests run one at a time.

Output constraints: a choice is picked by scoring every option's
log-likelihood after the prompt (always valid, no parsing); JSON is built
field by field by serving.guided (valid by construction) when the schema fits
its subset, else asked for in the prompt, parsed and re-asked once, as with
endpoints that cannot constrain output.

Qwen2-VL-family vision models get their inputs from the model's own processor
with PIL images resized to the recipe's pixel bounds (qwen-vl-utils is not
needed, and would import torchvision, which CPU machines here lack).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.cache import call_key, weights_fingerprint
from serving.guided import fill_schema, unsupported_features
from serving.images import (
    count_images,
    image_url_of,
    map_content_parts,
    resize_to_bounds,
    to_pil,
)
from serving.protocol import BackendError, CallResult, Message, Usage
from serving.structured import (
    append_to_last_user,
    cap_schema,
    json_prompt_instruction,
    parse_json_answer,
    reask_message,
)

if TYPE_CHECKING:
    from serving.recipes import Recipe

log = logging.getLogger(__name__)


@dataclass
class _Job:
    messages: list[Message]
    max_tokens: int
    temperature: float
    seed: int
    future: Future = field(default_factory=Future)


class TransformersBackend:
    """A local transformers model as an `LLMBackend`.

    Args:
        model_path: weights folder (safetensors + tokenizer/processor files).
        device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1".
        recipe: image pixel bounds and images-per-prompt limit.
        max_batch: most greedy text requests generated together.
        dtype: "auto" (bfloat16 on CUDA, float32 on CPU) or a torch dtype name.
        model_id: id recorded in results and cache keys (default: folder name).
        threads: torch CPU threads (0: torch's default). On a busy shared CPU, 1 thread
            can be several times faster than oversubscribed cores; this is process-wide.
        max_string_length: `maxLength` given to schema strings that have none.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        device: str = "auto",
        recipe: Recipe | None = None,
        max_batch: int = 8,
        dtype: str = "auto",
        model_id: str | None = None,
        max_string_length: int = 400,
        max_array_items: int = 16,
        threads: int = 0,
    ) -> None:
        import torch
        from transformers import AutoConfig

        if threads > 0:
            torch.set_num_threads(threads)

        self.model_path = Path(model_path)
        if not (self.model_path / "config.json").exists():
            raise FileNotFoundError(
                f"{self.model_path} has no config.json: not a transformers model folder"
            )
        self.recipe = recipe
        self.model_id = model_id or (
            recipe.served_name if recipe and recipe.served_name else self.model_path.name.lower()
        )
        # the cache key's scope: these weights, run in this process
        self.cache_scope = {"endpoint": "in-process", "weights": weights_fingerprint(self.model_path)}
        self.max_batch = max_batch
        self.max_string_length = max_string_length
        self.max_array_items = max_array_items
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        torch_dtype = (
            (torch.bfloat16 if device.startswith("cuda") else torch.float32)
            if dtype == "auto"
            else getattr(torch, dtype)
        )
        config = AutoConfig.from_pretrained(self.model_path)
        self.is_vision = hasattr(config, "vision_config")
        if self.is_vision:
            from transformers import AutoModelForImageTextToText

            self.processor = _load_vision_processor(self.model_path, config)
            self.tokenizer = self.processor.tokenizer
            self.model = AutoModelForImageTextToText.from_pretrained(
                self.model_path, dtype=torch_dtype
            )
        else:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self.processor = None
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
            self.model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=torch_dtype)
        self.model.to(device).eval()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._queue: list[_Job] = []
        self._cv = threading.Condition()
        self._model_lock = threading.Lock()  # one forward pass at a time
        self._closed = False
        self._worker = threading.Thread(target=self._work, name="failtax-transformers", daemon=True)
        self._worker.start()

    def __repr__(self) -> str:
        return f"TransformersBackend({str(self.model_path)!r}, device={self.device!r})"

    # -- inputs -----------------------------------------------------------------------

    def _images_and_template_messages(
        self, messages: list[Message]
    ) -> tuple[list[Message], list[Any]]:
        n = count_images(messages)
        if n and not self.is_vision:
            raise ValueError(
                f"{self.model_id} is a text model and cannot take the {n} image(s) in this request"
            )
        if (
            self.recipe is not None
            and n > max(self.recipe.images_per_prompt, 0)
            and self.recipe.images_per_prompt
        ):
            raise ValueError(
                f"{n} images in one request, but recipe {self.recipe.name!r} allows "
                f"{self.recipe.images_per_prompt}"
            )
        lo, hi = (self.recipe.min_pixels, self.recipe.max_pixels) if self.recipe else (0, 0)
        images: list[Any] = []

        def take_image(p: dict) -> dict:
            if p.get("type") not in ("image", "image_url"):
                return p
            raw = p["image"] if p["type"] == "image" else image_url_of(p)
            images.append(resize_to_bounds(to_pil(raw), lo, hi))
            return {"type": "image"}

        out = map_content_parts(messages, take_image)
        if not self.is_vision:  # text models' templates want plain strings
            out = [{**m, "content": "".join(p.get("text", "") for p in m["content"])}
                   if isinstance(m.get("content"), list) else m for m in out]
        return out, images

    def _encode(self, messages: list[Message]) -> tuple[str, list[Any]]:
        templ_messages, images = self._images_and_template_messages(messages)
        owner = self.processor if self.is_vision else self.tokenizer
        prompt = owner.apply_chat_template(
            templ_messages, tokenize=False, add_generation_prompt=True
        )
        return prompt, images

    # -- generation (worker thread) ---------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if self._closed and not self._queue:
                    return
                first = self._queue.pop(0)
                batch = [first]
                if first.temperature == 0:
                    # greedy text requests with the same length cap share one generate()
                    for job in list(self._queue):
                        if len(batch) >= self.max_batch:
                            break
                        if job.temperature == 0 and job.max_tokens == first.max_tokens:
                            self._queue.remove(job)
                            batch.append(job)
            self._run_batch(batch)

    def _run_batch(self, batch: list[_Job]) -> None:
        try:
            encoded = [self._encode(j.messages) for j in batch]
        except Exception as e:  # noqa: BLE001 - bad input fails its own jobs only
            for j in batch:
                j.future.set_exception(e)
            return
        with_images = [i for i, (_, imgs) in enumerate(encoded) if imgs]
        groups = [[i] for i in with_images] + (
            [[i for i in range(len(batch)) if i not in with_images]]
            if len(with_images) < len(batch)
            else []
        )
        for group in groups:
            jobs = [batch[i] for i in group]
            try:
                outs = self._generate([encoded[i] for i in group], jobs[0])
            except Exception as e:  # noqa: BLE001 - reported to the waiting callers
                for j in jobs:
                    j.future.set_exception(
                        BackendError(f"in-process generation failed: {type(e).__name__}: {e}")
                    )
                continue
            for j, out in zip(jobs, outs):
                j.future.set_result(out)

    def _generate(
        self, encoded: list[tuple[str, list[Any]]], job: _Job
    ) -> list[tuple[str, str, Usage, float]]:
        import torch

        start = time.perf_counter()
        prompts = [p for p, _ in encoded]
        images = [img for _, imgs in encoded for img in imgs]
        self.tokenizer.padding_side = "left"
        if self.is_vision:
            per_text = [imgs for _, imgs in encoded]
            inputs = self.processor(
                text=prompts, images=per_text if images else None, return_tensors="pt", padding=True
            )
        else:
            inputs = self.tokenizer(
                prompts, return_tensors="pt", padding=True, add_special_tokens=False
            )
        inputs = inputs.to(self.device)
        kwargs: dict[str, Any] = {
            "max_new_tokens": job.max_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if job.temperature > 0:
            kwargs.update(do_sample=True, temperature=job.temperature)
            torch.manual_seed(job.seed)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with self._model_lock, torch.inference_mode():
            out = self.model.generate(**inputs, **kwargs)
        prompt_len = inputs["input_ids"].shape[1]
        eos = set(_as_list(self.model.generation_config.eos_token_id)) | {
            self.tokenizer.eos_token_id
        }
        results = []
        elapsed = time.perf_counter() - start
        for row in range(out.shape[0]):
            new = out[row, prompt_len:].tolist()
            stopped = next((k for k, t in enumerate(new) if t in eos), None)
            tokens = new[:stopped] if stopped is not None else new
            reason = "stop" if stopped is not None else "length"
            n_prompt = int(inputs["attention_mask"][row].sum())
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            results.append(
                (text, reason, Usage(n_prompt, len(tokens) + (stopped is not None)), elapsed)
            )
        return results

    async def _submit(
        self, messages: list[Message], max_tokens: int, temperature: float, seed: int
    ):
        if self._closed:
            raise BackendError("the in-process backend is closed")
        job = _Job(messages, max_tokens, temperature, seed)
        with self._cv:
            self._queue.append(job)
            self._cv.notify()
        return await asyncio.wrap_future(job.future)

    # -- the Protocol -----------------------------------------------------------------

    async def complete(
        self, messages: list[Message], *, max_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> CallResult:
        key = call_key(
            self.model_id,
            "complete",
            messages,
            scope=self.cache_scope,
            max_tokens=max_tokens,
            temperature=temperature,
            seed=seed,
        )
        start = time.perf_counter()
        text, reason, usage, _ = await self._submit(messages, max_tokens, temperature, seed)
        return CallResult(
            text=text,
            model=self.model_id,
            call_id=key,
            usage=usage,
            latency_s=time.perf_counter() - start,
            finish_reason=reason,
        )

    async def complete_json(
        self,
        messages: list[Message],
        schema: dict[str, Any],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> CallResult:
        key = call_key(
            self.model_id,
            "complete_json",
            messages,
            scope=self.cache_scope,
            schema=schema,
            max_tokens=max_tokens,
            temperature=temperature,
            seed=seed,
        )
        sent = cap_schema(
            schema, max_string_length=self.max_string_length, max_items=self.max_array_items
        )
        start = time.perf_counter()
        if not unsupported_features(sent):
            # built field by field: valid JSON of the schema's shape by construction
            text, usage = await asyncio.to_thread(self._guided_json, messages, sent, max_tokens)
            parsed, error = parse_json_answer(text, schema)
            reason = "stop" if usage.completion_tokens <= max_tokens else "length"
            if usage.completion_tokens > max_tokens:
                parsed, error = (
                    None,
                    f"answer needs {usage.completion_tokens} tokens, over max_tokens={max_tokens}",
                )
            return CallResult(
                text=text,
                model=self.model_id,
                call_id=key,
                usage=usage,
                latency_s=time.perf_counter() - start,
                finish_reason=reason,
                parsed=parsed,
                error=error,
            )
        prompt_messages = append_to_last_user(messages, json_prompt_instruction(sent))
        text, reason, usage, _ = await self._submit(prompt_messages, max_tokens, temperature, seed)
        parsed, error = parse_json_answer(text, schema)
        attempts = 1
        if error is not None:
            attempts = 2
            followup = prompt_messages + [
                {"role": "assistant", "content": text},
                reask_message(error, schema),
            ]
            text, reason, usage2, _ = await self._submit(followup, max_tokens, temperature, seed)
            usage = Usage(
                usage.prompt_tokens + usage2.prompt_tokens,
                usage.completion_tokens + usage2.completion_tokens,
            )
            parsed, error = parse_json_answer(text, schema)
        if error is not None and reason == "length":
            error += f" (answer cut off at max_tokens={max_tokens})"
        return CallResult(
            text=text,
            model=self.model_id,
            call_id=key,
            usage=usage,
            latency_s=time.perf_counter() - start,
            finish_reason=reason,
            parsed=parsed,
            error=error,
            attempts=attempts,
        )

    def _guided_json(
        self, messages: list[Message], schema: dict[str, Any], max_tokens: int
    ) -> tuple[str, Usage]:
        prompt, images = self._encode(
            append_to_last_user(messages, json_prompt_instruction(schema))
        )
        lm = _GuidedAdapter(self, prompt, images)
        text = fill_schema(lm, schema)
        n_prompt = self._count_tokens(prompt, images)
        n_answer = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return text, Usage(n_prompt, n_answer)

    async def complete_choice(
        self,
        messages: list[Message],
        choices: list[str],
        *,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> CallResult:
        if not choices:
            raise ValueError("complete_choice needs at least one choice")
        key = call_key(
            self.model_id,
            "complete_choice",
            messages,
            scope=self.cache_scope,
            choices=list(choices),
            temperature=temperature,
            seed=seed,
        )
        start = time.perf_counter()
        scores, n_prompt = await asyncio.to_thread(self._score_choices, messages, list(choices))
        if temperature > 0:
            import numpy as np

            from common import derive_rng

            logits = np.array(scores) / temperature
            p = np.exp(logits - logits.max())
            best = int(derive_rng(seed, key, "choice").choice(len(choices), p=p / p.sum()))
        else:
            best = max(range(len(choices)), key=lambda i: scores[i])
        # each whole choice's likelihood, renormalised over the choices
        top = max(scores)
        weights = [math.exp(s - top) for s in scores]
        probs = {c: round(w / sum(weights), 4) for c, w in zip(choices, weights)}
        return CallResult(
            text=choices[best],
            model=self.model_id,
            call_id=key,
            usage=Usage(n_prompt, 0),
            latency_s=time.perf_counter() - start,
            finish_reason="stop",
            parsed=choices[best],
            choice_probs=probs,
        )

    def _score_choices(
        self, messages: list[Message], choices: list[str]
    ) -> tuple[list[float], int]:
        prompt, images = self._encode(messages)
        return self._score_continuations(prompt, images, choices), self._count_tokens(
            prompt, images
        )

    def _inputs(self, texts: list[str], images: list[Any], padding_side: str):
        self.tokenizer.padding_side = padding_side
        if self.is_vision:
            # every text carries the same images (one prompt, several continuations)
            batch_images = [list(images) for _ in texts] if images else None
            return self.processor(
                text=texts, images=batch_images, return_tensors="pt", padding=True
            )
        return self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)

    def _count_tokens(self, text: str, images: list[Any]) -> int:
        return int(self._inputs([text], images, "right")["input_ids"].shape[1])

    def _score_continuations(
        self, prefix: str, images: list[Any], continuations: list[str]
    ) -> list[float]:
        """Sum of log-probabilities of each continuation's tokens after `prefix`."""
        import torch

        n_prefix = self._count_tokens(prefix, images)
        inputs = self._inputs([prefix + c for c in continuations], images, "right").to(self.device)
        with self._model_lock, torch.inference_mode():
            logits = self.model(**inputs).logits.float()
        logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
        targets = inputs["input_ids"][:, 1:]
        token_lp = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        mask = inputs["attention_mask"][:, 1:].clone()
        mask[:, : n_prefix - 1] = 0  # score only the continuation's tokens
        return (token_lp * mask).sum(dim=1).tolist()

    def _generate_raw(self, prefix: str, images: list[Any], max_new_tokens: int, stop) -> str:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        inputs = self._inputs([prefix], images, "left").to(self.device)
        n = inputs["input_ids"].shape[1]
        tokenizer = self.tokenizer

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                done = stop(tokenizer.decode(input_ids[0, n:], skip_special_tokens=True))
                return torch.full(
                    (input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device
                )

        with self._model_lock, torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=tokenizer.pad_token_id,
                stopping_criteria=StoppingCriteriaList([_Stop()]),
            )
        return tokenizer.decode(out[0, n:], skip_special_tokens=True)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    async def aclose(self) -> None:
        self.close()


def _load_vision_processor(path: Path, config: Any):
    """The model's processor; where it cannot be built (Qwen-VL processors construct a
    video processor that needs torchvision), an equivalent made of the tokenizer and
    the PIL image processor."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(path)
    except (
        ImportError,
        AttributeError,
        ModuleNotFoundError,
        RuntimeError,
        ValueError,
        OSError,
    ) as e:
        if getattr(config, "image_token_id", None) is None:
            raise
        log.info(
            "building Qwen-VL inputs without the model's processor (%s: %s)", type(e).__name__, e
        )
        return _QwenVLInputs(path, config)


class _QwenVLInputs:
    """Qwen2/2.5-VL processor inputs from the tokenizer and the PIL image processor:
    each image placeholder token is expanded to the image's merged patch count."""

    def __init__(self, path: Path, config: Any) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.image_processor = AutoImageProcessor.from_pretrained(path)
        self.image_token = self.tokenizer.convert_ids_to_tokens(config.image_token_id)
        self.merge = int(getattr(config.vision_config, "spatial_merge_size", 2)) ** 2
        template = None
        for name in ("chat_template.jinja", "chat_template.json"):
            f = path / name
            if f.exists():
                import json

                template = (
                    f.read_text()
                    if name.endswith(".jinja")
                    else json.loads(f.read_text())["chat_template"]
                )
                break
        self.chat_template = template

    def apply_chat_template(self, messages, **kw):
        return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, **kw)

    def __call__(
        self, text: list[str], images=None, return_tensors: str = "pt", padding: bool = True
    ):
        import torch
        from transformers import BatchFeature

        per_text = (
            images
            if images and isinstance(images[0], list)
            else ([images] if images else [[]] * len(text))
        )
        expanded, pixel_values, grids = [], [], []
        for prompt, imgs in zip(text, per_text):
            if imgs:
                feats = self.image_processor(images=imgs, return_tensors="pt")
                pixel_values.append(feats["pixel_values"])
                grids.append(feats["image_grid_thw"])
                counts = (feats["image_grid_thw"].prod(-1) // self.merge).tolist()
                pieces = prompt.split(self.image_token)
                if len(pieces) - 1 != len(counts):
                    raise ValueError(
                        f"{len(pieces) - 1} image placeholders for {len(counts)} images"
                    )
                prompt = pieces[0] + "".join(
                    self.image_token * n + rest for n, rest in zip(counts, pieces[1:])
                )
            expanded.append(prompt)
        out = dict(
            self.tokenizer(
                expanded, return_tensors=return_tensors, padding=padding, add_special_tokens=False
            )
        )
        if pixel_values:
            out["pixel_values"] = torch.cat(pixel_values)
            out["image_grid_thw"] = torch.cat(grids)
        return BatchFeature(out)


class _GuidedAdapter:
    """`serving.guided.GuidedLM` over a TransformersBackend and one encoded prompt."""

    def __init__(self, backend: TransformersBackend, prompt: str, images: list[Any]) -> None:
        self.backend, self.prompt, self.images = backend, prompt, images

    def score(self, prefix: str, candidates: list[str]) -> list[float]:
        return self.backend._score_continuations(self.prompt + prefix, self.images, candidates)

    def generate(self, prefix: str, max_new_tokens: int, stop) -> str:
        return self.backend._generate_raw(self.prompt + prefix, self.images, max_new_tokens, stop)


def _as_list(x: Any) -> list:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]
