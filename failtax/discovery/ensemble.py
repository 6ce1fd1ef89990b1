"""`ensemble`: the paper's prompt ensemble with aggregation, map-reduced to scale.

1. Members: the seed clustering prompt, instruction files listed in
   `ensemble_prompts`, and `num_rephrasings` rephrasings of the seed's
   instructions written by the model (cached like every call; a rephrasing
   that is empty, repetitive, a verbatim copy or far too short is re-asked,
   then the seed instructions stand in and the notes say so).
2. Map: each member clusters its own seeded sample of the explanations
   (`max_explanations_per_candidate`), split into batches that fit the context
   window next to the member's instructions and the taxonomy's output budget.
3. Reduce: a member's batch taxonomies are merged with the aggregation prompt,
   in groups that fit the context, until one candidate taxonomy remains.
4. Aggregate: the candidates are merged into the final taxonomy with the same
   prompt. A failed merge falls back to code (near-duplicate grouping of the
   modes' embeddings), recorded in the notes.
5. Checks: degenerate names fall back to the c-TF-IDF keywords of the
   explanations nearest each mode; exact-duplicate names are joined.

The prompt's only placeholders for the data are `{explanations}` (seed) and
`{candidates}` (aggregation); the instructions are the seed text above the line
that introduces the data, and only they are rephrased, so the output format
sentence below the data always survives.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
from tqdm import tqdm

from common import derive_seed
from failtax.answers import rephrase_answer, taxonomy_answer_for
from failtax.degenerate import copied_share, is_repetitive, words
from failtax.discovery.cluster_name import ClusterThenName
from failtax.discovery.common import (
    CallLog,
    StrategyBase,
    call_json,
    check_description,
    check_name,
    clean_keywords,
    clip,
    ctfidf_keywords,
    explanation_text,
    fill,
    group_by_similarity,
    keyword_description,
    keyword_name,
    load_prompt,
    mode_text,
    normalise_name,
    rounded,
)
from failtax.discovery.config import DiscoveryConfig
from failtax.types import Explanation, Mode, Taxonomy
from serving.protocol import LLMBackend

log = logging.getLogger(__name__)


def split_seed(template: str) -> tuple[str, str]:
    """(instructions, data section) of a seed prompt: the data section starts at
    the line introducing `{explanations}` (the line before it when that one
    ends with a colon)."""
    lines = template.splitlines()
    at = next((i for i, line in enumerate(lines) if "{explanations}" in line), None)
    if at is None:
        raise ValueError("the seed discovery prompt must contain an {explanations} placeholder")
    if at > 0 and lines[at - 1].rstrip().endswith(":"):
        at -= 1
    return "\n".join(lines[:at]).strip(), "\n".join(lines[at:])


def check_rephrasing(text: str, seed_instructions: str) -> list[str]:
    """Why a model-written rephrasing cannot serve as an ensemble member."""
    flags = []
    if len(words(text)) < max(8, len(words(seed_instructions)) // 3):
        flags.append("too_short")
    if is_repetitive(text):
        flags.append("repetition")
    if copied_share(text, [seed_instructions], n=8) >= 0.9:
        flags.append("copied_input")  # a verbatim copy adds no diversity
    return flags


class Ensemble(StrategyBase):
    """Discovery strategy: prompt ensemble → candidate taxonomies → aggregation."""

    name = "ensemble"

    # ------------------------------------------------------------------ budget

    def _data_budget_chars(self, instructions: str, data_section: str) -> int:
        cfg = self.cfg
        fixed_tokens = (len(instructions) + len(data_section)) / cfg.chars_per_token
        free = cfg.context_tokens - cfg.taxonomy_max_tokens() - fixed_tokens - 64
        if free < 200:
            raise ValueError(
                f"context_tokens={cfg.context_tokens} leaves no room for explanations next to the prompt and a "
                f"{cfg.max_modes}-mode answer; lower discovery.max_modes or raise context_tokens"
            )
        return int(free * cfg.chars_per_token)

    @staticmethod
    def _batches(items: list[str], budget_chars: int) -> list[list[str]]:
        batches: list[list[str]] = [[]]
        used = 0
        for t in items:
            cost = len(t) + 4
            if batches[-1] and used + cost > budget_chars:
                batches.append([])
                used = 0
            batches[-1].append(t)
            used += cost
        return [b for b in batches if b]

    # ------------------------------------------------------------------ discover

    async def discover(self, explanations: list[Explanation], backend: LLMBackend | None) -> Taxonomy:
        """Build a taxonomy of `explanations` with the prompt ensemble.

        Returns:
            The aggregated taxonomy with the candidate taxonomies; `notes` hold the
            ensemble members, what the model vs the code decided, errors and costs.
        """
        cfg = self.cfg
        self.call_log = CallLog()
        self._limiter = asyncio.Semaphore(cfg.concurrency)
        kept = [e for e in explanations if explanation_text(e, cfg.include_trajectory)]
        view = self.writer_view(kept)
        raw = view.texts if view is not None else [explanation_text(e, cfg.include_trajectory) for e in kept]
        texts = [clip(t, cfg.sample_max_chars) for t in raw]
        if not texts:
            return Taxonomy(modes=[], strategy=self.name, notes={"skipped_empty": len(explanations), "errors": []})
        seed_template = load_prompt(cfg.seed_prompt)
        seed_instructions, data_section = split_seed(fill_known(seed_template, cfg))
        if backend is None:  # no model at all: only the embedding fallback below can answer
            self.call_log.error("no_backend", "discover", "the ensemble strategy needs a model backend")
            members, member_notes, candidates = [], [], []
        else:
            members, member_notes = await self._members(seed_instructions, backend)
        self._bar = tqdm(desc="ensemble calls", unit="call", disable=len(texts) < 200)
        try:
            if backend is not None:
                candidates = list(
                    await asyncio.gather(
                        *(self._candidate(i, instr, data_section, texts, backend) for i, instr in enumerate(members))
                    )
                )
            usable = [c for c in candidates if c]
            if usable:
                final, aggregated_by = await self._reduce(usable, backend, purpose="aggregate")
            else:
                final, aggregated_by = [], "none"
        finally:
            self._bar.close()
        self._prompt_text = load_prompt(cfg.aggregate_prompt) + "\n" + seed_template
        lo = cfg.target_modes[0]
        if final and len(final) < lo and usable:
            # The aggregation collapsed below the fewest modes asked for (the 135M model
            # often answers with one mode): merge the candidates' modes by code instead.
            merged = self._code_merge([m for c in usable for m in c])
            if len(merged) >= lo:
                self.call_log.degenerate["aggregate:too_few_modes"] += 1
                final, aggregated_by = merged, f"code (model aggregation gave {len(final)} < {lo} modes)"
            else:
                final = []
        if not final:
            # No member produced a taxonomy (dead server, unparseable output): the
            # embedding clusters with keyword names are still a useful answer.
            fallback = f"no usable candidate taxonomy (none parsed, or fewer than {lo} modes); " \
                "clusters from embeddings with keyword names"
            sub = ClusterThenName(cfg.model_copy(update={"use_model_names": False}), embedder=self.embedder)
            tax = await sub.discover(explanations, None)
            tax.strategy = self.name
            tax.notes["fallback"] = fallback
            tax.notes["errors"] = list(self.call_log.errors) + tax.notes.get("errors", [])
            tax.notes["calls"] = self.call_log.summary()
            tax.notes["call_ids"] = sorted(self.call_log.call_ids)
            tax.notes["retryable"] = any(e["kind"] == "backend_error" for e in self.call_log.errors)
            tax.notes["ensemble_members"] = member_notes
            tax.notes["decided_by"]["fallback"] = fallback
            return tax
        modes, decided = self._finalise(final, texts, kept)
        notes: dict[str, Any] = {
            "embedder": self.embedder.name,
            "ensemble_members": member_notes,
            "aggregated_by": aggregated_by,
            "candidates_parsed": f"{len(usable)}/{len(members)}",
            "skipped_empty": len(explanations) - len(kept),
            "explanations_per_member": min(len(texts), cfg.max_explanations_per_candidate or len(texts)),
            "decided_by": decided,
            "degenerate": dict(sorted(self.call_log.degenerate.items())),
            "calls": self.call_log.summary(),
            "call_ids": sorted(self.call_log.call_ids),  # completion order varies between runs
            "errors": list(self.call_log.errors),
            "retryable": any(e["kind"] == "backend_error" for e in self.call_log.errors),
            "exemplars": self._exemplars,
            "mode_vectors": {"embedder": self.embedder.name, "kind": "text",
                             "vectors": {m.name: rounded(v) for m, v in zip(modes, self._vectors)}},
        }
        self.note_writer_view(notes, view, len(kept), centred=False)
        return Taxonomy(modes=modes, strategy=self.name, candidates=[c for c in candidates if c], notes=notes)

    # ------------------------------------------------------------------ members

    async def _members(self, seed_instructions: str, backend: LLMBackend) -> tuple[list[str], list[dict]]:
        cfg = self.cfg
        members = [seed_instructions]
        notes: list[dict[str, Any]] = [{"source": "seed", "file": cfg.seed_prompt}]
        for f in cfg.ensemble_prompts:
            members.append(fill_known(load_prompt(f), cfg).strip())
            notes.append({"source": "file", "file": f})
        template = load_prompt(cfg.rephrase_prompt)
        answer = rephrase_answer(max_chars=int(len(seed_instructions) * 1.25))
        # Worst case is a token per character; half that covers English text with room.
        max_tokens = int(len(seed_instructions) * 1.25 / 2.0) + 32

        async def one(r: int) -> tuple[str, dict[str, Any]]:
            tried: list[dict[str, Any]] = []
            for attempt in range(cfg.rephrase_attempts):
                parsed, result = await call_json(
                    backend, fill(template, instructions=seed_instructions), answer, max_tokens=max_tokens,
                    temperature=cfg.rephrase_temperature, seed=derive_seed(cfg.seed, "rephrase", r, attempt) % (2**31),
                    purpose=f"rephrase:{r}", call_log=self.call_log, limiter=self._limiter,
                )
                text = parsed.get("instructions", "").strip() if isinstance(parsed, dict) else ""
                flags = check_rephrasing(text, seed_instructions) if parsed is not None else ["no_answer"]
                tried.append({"attempt": attempt, "flags": flags, "call_id": result.call_id if result else None})
                if not flags:
                    return text, {"source": "model", "attempts": tried, "text": text}
                for f in flags:
                    if f != "no_answer":
                        self.call_log.degenerate[f"rephrasing:{f}"] += 1
            return seed_instructions, {"source": "seed (rephrasing degenerate)", "attempts": tried}

        results = await asyncio.gather(*(one(r) for r in range(cfg.num_rephrasings)))
        for text, note in results:
            members.append(text)
            notes.append(note)
        return members, notes

    # ------------------------------------------------------------------ map

    async def _candidate(
        self, member: int, instructions: str, data_section: str, texts: list[str], backend: LLMBackend
    ) -> list[Mode]:
        cfg = self.cfg
        rng = np.random.default_rng(derive_seed(cfg.seed, "member-sample", member))
        order = rng.permutation(len(texts))
        cap = cfg.max_explanations_per_candidate or len(texts)
        sample = [texts[i] for i in order[:cap]]
        batches = self._batches(sample, self._data_budget_chars(instructions, data_section))
        answer = taxonomy_answer_for(cfg, cfg.max_modes)

        async def one(b: int, batch: list[str]) -> list[Mode]:
            listing = "\n".join(f"{i + 1}. {t}" for i, t in enumerate(batch))
            prompt = instructions + "\n\n" + fill(data_section, explanations=listing)
            parsed, _ = await call_json(
                backend, prompt, answer, max_tokens=cfg.taxonomy_max_tokens(), temperature=cfg.temperature,
                seed=derive_seed(cfg.seed, "map", member, b) % (2**31), purpose=f"map:{member}:{b}",
                call_log=self.call_log, limiter=self._limiter,
            )
            self._bar.update(1)
            return self._parse_modes(parsed, weight=len(batch))

        lists = [m for m in await asyncio.gather(*(one(b, batch) for b, batch in enumerate(batches))) if m]
        if not lists:
            return []
        if len(lists) == 1:
            return lists[0]
        merged, _ = await self._reduce(lists, backend, purpose=f"reduce:{member}")
        return merged

    def _parse_modes(self, parsed: Any, *, weight: int) -> list[Mode]:
        """Modes from a validated answer; share of `weight` explanations kept for frequencies."""
        cfg = self.cfg
        if not isinstance(parsed, dict) or not isinstance(parsed.get("modes"), list):
            return []
        out: list[Mode] = []
        for m in parsed["modes"][: cfg.max_modes]:
            if not isinstance(m, dict):
                continue
            pct = m.get("percent")
            pct = min(max(float(pct), 0.0), 100.0) / 100.0 if isinstance(pct, (int, float)) else None
            mode = Mode(
                name=clip(str(m.get("name", "")), cfg.name_max_chars),
                description=clip(str(m.get("description", "")), cfg.description_max_chars),
                keywords=clean_keywords(m.get("keywords"), max_keywords=cfg.max_keywords,
                                        max_chars=cfg.keyword_max_chars),
                reported_frequency=pct,
                count=weight,  # how many explanations stood behind the list (for weighting shares)
            )
            if normalise_name(mode.name):
                out.append(mode)
        return out

    # ------------------------------------------------------------------ reduce

    async def _reduce(self, lists: list[list[Mode]], backend: LLMBackend, *, purpose: str) -> tuple[list[Mode], str]:
        """Merge mode lists with the aggregation prompt, in context-sized groups,
        until one list remains; a failed merge is done by code instead."""
        cfg = self.cfg
        template = load_prompt(cfg.aggregate_prompt)
        fixed = fill_known(template, cfg)
        budget = self._data_budget_chars(fixed.replace("{candidates}", ""), "")
        answer = taxonomy_answer_for(cfg, cfg.max_modes)
        by = "model"
        level = 0
        while len(lists) > 1 or level == 0:
            groups: list[list[list[Mode]]] = [[]]
            used = 0
            for lst in lists:
                cost = sum(len(_candidate_line(m)) + 2 for m in lst) + 16
                if groups[-1] and used + cost > budget:
                    groups.append([])
                    used = 0
                groups[-1].append(lst)
                used += cost
            if len(groups) == len(lists) and len(lists) > 1 and level > 0:
                # No progress possible (each list alone fills the context): merge by code.
                return self._code_merge([m for lst in lists for m in lst]), "code"

            async def one(g: int, group: list[list[Mode]], level: int) -> list[Mode]:
                nonlocal by
                if len(group) == 1 and level > 0:
                    return group[0]
                listing = "\n\n".join(
                    f"Analyst {i + 1}:\n" + "\n".join(_candidate_line(m) for m in lst) for i, lst in enumerate(group)
                )
                parsed, _ = await call_json(
                    backend, fill(fixed, candidates=listing), answer, max_tokens=cfg.taxonomy_max_tokens(),
                    temperature=cfg.temperature, seed=derive_seed(cfg.seed, purpose, level, g) % (2**31),
                    purpose=f"{purpose}:{level}:{g}", call_log=self.call_log, limiter=self._limiter,
                )
                self._bar.update(1)
                weight = sum(m.count for lst in group for m in lst) // max(1, max(len(lst) for lst in group))
                modes = self._parse_modes(parsed, weight=weight)
                if not modes:
                    by = "model+code" if by != "code" else by
                    return self._code_merge([m for lst in group for m in lst])
                return modes

            lists = list(await asyncio.gather(*(one(g, group, level) for g, group in enumerate(groups))))
            level += 1
        return lists[0], by

    def _code_merge(self, modes: list[Mode]) -> list[Mode]:
        """Join modes whose embeddings say they are the same, keeping the one
        named most often, capped at max_modes."""
        cfg = self.cfg
        if not modes:
            return []
        vecs = self.embedder.embed([mode_text(m) for m in modes])
        groups = group_by_similarity(vecs @ vecs.T, cfg.merge_name_similarity, min_groups=1)
        while len(groups) > cfg.max_modes:
            # Too many distinct modes: lower the bar until they fit.
            groups = group_by_similarity(vecs @ vecs.T, -1.0, min_groups=cfg.max_modes)
        out = []
        for g in sorted(groups, key=len, reverse=True):
            centre = vecs[g].mean(axis=0)
            head = modes[g[int(np.argmax(vecs[g] @ centre))]]
            kws: list[str] = []
            for i in g:
                kws += [k for k in modes[i].keywords if k not in kws]
            shares = [modes[i].reported_frequency for i in g if modes[i].reported_frequency is not None]
            out.append(Mode(name=head.name, description=head.description, keywords=kws[: cfg.max_keywords],
                            reported_frequency=min(1.0, sum(shares)) if shares else None,
                            count=max(modes[i].count for i in g)))
        return out

    # ------------------------------------------------------------------ finalise

    def _finalise(self, final: list[Mode], texts: list[str], kept: list[Explanation]) -> tuple[list[Mode], dict]:
        """Check the model's final modes; give degenerate ones keyword names."""
        cfg = self.cfg
        # Join exact duplicate names first (the model often repeats a mode).
        uniq: dict[str, Mode] = {}
        for m in final:
            key = normalise_name(m.name)
            if key in uniq:
                prev = uniq[key]
                prev.keywords += [k for k in m.keywords if k not in prev.keywords]
                if prev.reported_frequency is not None and m.reported_frequency is not None:
                    prev.reported_frequency = min(1.0, prev.reported_frequency + m.reported_frequency)
                self.call_log.degenerate["name:duplicate"] += 1
            else:
                uniq[key] = m
        modes = list(uniq.values())
        # Nearest-mode membership of the explanations gives keywords and exemplars.
        x = self.embedder.embed(texts)
        mv = self.embedder.embed([mode_text(m) for m in modes])
        labels = np.argmax(x @ mv.T, axis=1)
        kw = ctfidf_keywords(texts, labels, cfg.max_keywords)
        taken: set[str] = set()
        n_desc_model = 0
        self._exemplars = {}
        for c, m in enumerate(modes):
            members = np.flatnonzero(labels == c)
            ex = [texts[i] for i in members[np.argsort(-(x[members] @ mv[c]))][:3]] if len(members) else []
            code_kw = kw.get(c, [])
            flags = check_name(m.name, sources=texts[:2000], taken=taken, max_words=cfg.name_max_words,
                               prompt=self._prompt_text)
            if flags:
                for f in flags:
                    self.call_log.degenerate[f"name:{f}"] += 1
                m.name = keyword_name(code_kw or m.keywords, cfg.name_max_chars, fallback=f"mode {c + 1}")
                if normalise_name(m.name) in taken:
                    m.name = f"{m.name} ({c + 1})"
                m.named_by = "keywords"
            taken.add(normalise_name(m.name))
            dflags = check_description(m.description, sources=texts[:2000])
            if dflags:
                for f in dflags:
                    self.call_log.degenerate[f"description:{f}"] += 1
                m.description = keyword_description(code_kw, ex[0] if ex else "", cfg.description_max_chars)
            else:
                n_desc_model += 1
            for k in code_kw:
                if len(m.keywords) >= cfg.max_keywords:
                    break
                if k not in m.keywords:
                    m.keywords.append(k)
            m.count = 0
            self._exemplars[m.name] = ex
        total = sum(m.reported_frequency or 0.0 for m in modes)
        if total > 0:  # the model's shares rarely sum to 100: normalise, keep the ratios
            for m in modes:
                m.reported_frequency = round((m.reported_frequency or 0.0) / total, 6)
        self._vectors = list(self.embedder.embed([mode_text(m) for m in modes]))
        n_model = sum(m.named_by == "model" for m in modes)
        decided = {
            "clusters": "model (prompt ensemble + aggregation)",
            "number_of_modes": "model (capped by discovery.max_modes)",
            "names": f"model {n_model}/{len(modes)}, keywords {len(modes) - n_model}/{len(modes)}",
            "descriptions": f"model {n_desc_model}/{len(modes)}, code {len(modes) - n_desc_model}/{len(modes)}",
            "keywords": "model, filled up with c-TF-IDF of the nearest explanations",
            "reported_frequency": "model (percent per mode, normalised to sum 1)" if total > 0 else "none",
        }
        return modes, decided


def fill_known(template: str, cfg: DiscoveryConfig) -> str:
    """Fill the config placeholders of a discovery prompt, leaving data placeholders."""
    values = {
        "max_modes": cfg.target_modes[1],
        "min_modes": cfg.target_modes[0],
        "name_max_words": cfg.name_max_words,
        "max_keywords": cfg.max_keywords,
        "explanations": "{explanations}",
        "candidates": "{candidates}",
    }
    return fill(template, **values)


def _candidate_line(m: Mode) -> str:
    kws = ", ".join(m.keywords[:4])
    return f"- {m.name}: {m.description}" + (f" [{kws}]" if kws else "")
