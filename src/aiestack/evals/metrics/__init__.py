"""Every built-in metric, by name: ``build_metric("token_f1", {})``.

Suites name metrics in YAML with options; :func:`build_metric` validates the options and returns a
:class:`~aiestack.evals.base.Metric` (per sample) or :class:`~aiestack.evals.base.CorpusMetric`
(whole run). Metrics that need a model get it here: ``judge_call`` for judges and faithfulness,
``embeddings`` for embedding similarity and answer relevance; asking for one without it is a
:class:`~aiestack.errors.ConfigError` that says what to configure.

Retrieval metrics take their cut-off from the name as well as from options: ``ndcg@10``,
``recall@5``, ``mrr@10``, ``precision@3``.

Where each family is defined, and its conventions: :mod:`._text` (SQuAD normalisation),
:mod:`._overlap` (sacrebleu / rouge-score scales), :mod:`._structured` (final-number extraction),
:mod:`._model` (logprobs, latency, cost, embeddings), :mod:`._retrieval` (ranked and relevant ids),
:mod:`._rag` (lexical context metrics, judge faithfulness), :mod:`._code` (the sandbox),
:mod:`.sql` (text-to-SQL by execution on a read-only SQLite database), :mod:`.tools` (tool calls,
BFCL's AST rules), :mod:`.agent` (agent runs: task success, steps).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from pydantic import Field

from aiestack.errors import ConfigError
from aiestack.evals.base import CorpusMetric, Metric
from aiestack.evals.judges import DEFAULT_RUBRIC, JudgeCall, RubricJudge
from aiestack.evals.metrics import agent, code, model, overlap, rag, retrieval, sql, structured, text, tools
from aiestack.evals.metrics.options import MetricOptions, ReferenceOptions, parse_options, require
from aiestack.models.base import EmbeddingModel

if TYPE_CHECKING:
    from aiestack.hookspecs import MetricSpec

__all__ = ["available_metrics", "build_metric", "needs_model"]


@dataclass(frozen=True, slots=True)
class _Deps:
    metric: str  # the name as written, for error messages
    judge_call: JudgeCall | None
    embeddings: EmbeddingModel | None
    base_dir: Path = Path(".")  # the suite file's folder: relative paths in options start here

    def judge(self) -> JudgeCall:
        require(
            self.judge_call,
            self.metric,
            "a judge model",
            "configure a judge for the suite (its 'judge' model)",
        )
        assert self.judge_call is not None
        return self.judge_call

    def embedder(self) -> EmbeddingModel:
        require(self.embeddings, self.metric, "an embedding model", "configure [embeddings] in aiestack.toml")
        assert self.embeddings is not None
        return self.embeddings


class JudgeOptions(ReferenceOptions):
    model: str = ""
    rubric: str = DEFAULT_RUBRIC
    scale: tuple[int, int] = (1, 5)
    prompt: str | None = None
    question_key: str | None = None
    temperature: float = Field(default=0.0, ge=0)


def _judge(reference_based: bool) -> Callable[[str, Mapping[str, Any], _Deps], Metric]:
    def build(name: str, options: Mapping[str, Any], deps: _Deps) -> Metric:
        o = parse_options(JudgeOptions, options, deps.metric)
        if o.scale[1] <= o.scale[0]:
            raise ConfigError(
                f"metrics.{deps.metric}.scale", f"{list(o.scale)} is not low-to-high", "use e.g. [1, 5]"
            )
        return RubricJudge(
            deps.judge(),
            name=o.name or name,
            model=o.model,
            rubric=o.rubric,
            scale=o.scale,
            prompt=o.prompt,
            reference_key=o.reference_key,
            reference_based=reference_based,
            question_key=o.question_key,
            temperature=o.temperature,
        )

    return build


Factory = Callable[[str, Mapping[str, Any], _Deps], Metric | CorpusMetric]


def _simple(opts_model: type[Any], make: Callable[[str, Any], Metric | CorpusMetric]) -> Factory:
    """A factory for metrics built from (name, validated options) only."""

    def build(name: str, options: Mapping[str, Any], deps: _Deps) -> Metric | CorpusMetric:
        o = parse_options(opts_model, options, deps.metric)
        return make(o.name or name, o)

    return build


def _with_embeddings(opts_model: type[Any], make: Callable[[str, Any, EmbeddingModel], Metric]) -> Factory:
    def build(name: str, options: Mapping[str, Any], deps: _Deps) -> Metric:
        o = parse_options(opts_model, options, deps.metric)
        return make(o.name or name, o, deps.embedder())

    return build


def _sql_execution(name: str, options: Mapping[str, Any], deps: _Deps) -> Metric:
    o = parse_options(sql.SqlOptions, options, deps.metric)
    return sql.SqlExecution(o.name or name, o, deps.base_dir)


def _faithfulness(name: str, options: Mapping[str, Any], deps: _Deps) -> Metric:
    o = parse_options(rag.FaithfulnessOptions, options, deps.metric)
    return rag.Faithfulness(o.name or name, o, deps.judge())


def _logprob(kind: Any) -> Factory:
    return _simple(MetricOptions, lambda name, _o: model.Logprob(name, kind))


def _rouge(variant: str) -> Factory:
    return _simple(overlap.RougeOptions, lambda name, o: overlap.Rouge(name, variant, o))


def _retrieval_metric(kind: retrieval.Kind) -> Factory:
    def build(name: str, options: Mapping[str, Any], deps: _Deps) -> Metric:
        o = parse_options(retrieval.RetrievalOptions, options, deps.metric)
        return retrieval.RetrievalMetric(o.name or f"{kind}@{o.k}", kind, o)

    return build


_FACTORIES: Mapping[str, Factory] = MappingProxyType(
    {
        "exact_match": _simple(text.ExactMatchOptions, text.exact_match),
        "normalized_exact_match": _simple(ReferenceOptions, text.normalized_exact_match),
        "token_f1": _simple(ReferenceOptions, text.token_f1_metric),
        "contains": _simple(text.ContainsOptions, text.Contains),
        "regex": _simple(text.RegexOptions, text.Regex),
        "label_match": _simple(text.LabelOptions, text.LabelMatch),
        "json_valid": _simple(MetricOptions, structured.JsonValid),
        "json_schema": _simple(structured.JsonSchemaOptions, structured.JsonSchemaMatch),
        "numeric_match": _simple(structured.NumericOptions, structured.NumericMatch),
        "bleu": _simple(overlap.BleuOptions, overlap.bleu),
        "corpus_bleu": _simple(overlap.BleuOptions, overlap.corpus_bleu),
        "chrf": _simple(overlap.ChrfOptions, overlap.chrf),
        "corpus_chrf": _simple(overlap.ChrfOptions, overlap.corpus_chrf),
        "rouge1": _rouge("rouge1"),
        "rouge2": _rouge("rouge2"),
        "rougeL": _rouge("rougeL"),
        "rougeLsum": _rouge("rougeLsum"),
        "embedding_similarity": _with_embeddings(ReferenceOptions, model.EmbeddingSimilarity),
        "answer_relevance": _with_embeddings(model.RelevanceOptions, model.AnswerRelevance),
        "mean_logprob": _logprob("mean_logprob"),
        "perplexity": _logprob("perplexity"),
        "latency": _simple(MetricOptions, model.Latency),
        "cost": _simple(MetricOptions, model.Cost),
        "functional_correctness": _simple(code.CodeOptions, code.FunctionalCorrectness),
        "sql_execution": _sql_execution,
        "ndcg": _retrieval_metric("ndcg"),
        "recall": _retrieval_metric("recall"),
        "precision": _retrieval_metric("precision"),
        "mrr": _retrieval_metric("mrr"),
        "context_precision": _simple(rag.ContextOptions, rag.ContextPrecision),
        "context_recall": _simple(rag.ContextOptions, rag.ContextRecall),
        "lexical_groundedness": _simple(rag.GroundednessOptions, rag.LexicalGroundedness),
        "faithfulness": _faithfulness,
        "tool_call_accuracy": _simple(tools.ToolOptions, tools.ToolCallAccuracy),
        "tool_selection": _simple(tools.ToolOptions, tools.ToolSelection),
        "invalid_tool_calls": _simple(tools.ToolOptions, tools.InvalidToolCalls),
        "tool_calls": _simple(tools.ToolOptions, tools.ToolCallCount),
        "task_success": _simple(ReferenceOptions, agent.TaskSuccess),
        "agent_steps": _simple(MetricOptions, agent.AgentSteps),
        "judge": _judge(reference_based=False),
        "judge_reference": _judge(reference_based=True),
    }
)


#: Built-in metrics that call a model (a judge or the embedding model): they run where the stack is.
_MODEL_METRICS = frozenset({"judge", "judge_reference", "faithfulness", "embedding_similarity", "answer_relevance"})


def needs_model(name: str) -> bool:
    """Whether the built-in metric ``name`` (``ndcg@10`` style names too) calls a model to score."""
    return name.partition("@")[0] in _MODEL_METRICS


def available_metrics() -> list[str]:
    """The names :func:`build_metric` understands, sorted."""
    return sorted(_FACTORIES)


def build_metric(
    name: str,
    options: Mapping[str, Any],
    *,
    judge_call: JudgeCall | None = None,
    embeddings: EmbeddingModel | None = None,
    base_dir: Path = Path("."),
    extra: Mapping[str, MetricSpec] | None = None,
) -> Metric | CorpusMetric:
    """The metric called ``name`` with ``options``; a ConfigError for an unknown name or a bad option.

    ``base_dir`` is where relative paths in options (``sql_execution``'s database) start: the suite's folder.
    ``extra`` holds the metrics plugins registered; a built-in name is never shadowed by one.
    """
    plugin = (extra or {}).get(name)
    if plugin is not None and name not in _FACTORIES:
        return plugin.factory(name, dict(options))
    base, _, cutoff = name.partition("@")
    options = dict(options)
    if cutoff:
        if base not in ("ndcg", "recall", "precision", "mrr") or not cutoff.isdigit():
            raise ConfigError(
                f"metrics.{name}", "only retrieval metrics take '@k'", "write e.g. 'ndcg@10', or drop the '@'"
            )
        options.setdefault("k", int(cutoff))
    factory = _FACTORIES.get(base)
    if factory is None:
        close = difflib.get_close_matches(base, _FACTORIES, n=1)
        did = f"did you mean '{close[0]}'? " if close else ""
        known = sorted({*available_metrics(), *(extra or {})})
        raise ConfigError(f"metrics.{name}", "unknown metric", f"{did}known metrics: {', '.join(known)}")
    return factory(base, options, _Deps(name, judge_call, embeddings, base_dir))
