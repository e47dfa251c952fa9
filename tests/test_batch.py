"""The batch runners: in-process (threads) and Ray (a local instance), one conformance suite.

Ray starts a local instance once for the module (a few seconds, two CPUs); the Ray tests are
skipped when the ``ray`` extra is not installed.

The Ray tests run in an interpreter of their own (``test_the_ray_tests_pass_in_their_own_interpreter``
starts pytest on this file in a subprocess): late in a full suite, after hundreds of tests have left
threads, servers and sockets behind in the process, ``ray.init`` has aborted the whole interpreter
from C++ while connecting to its GCS. A fresh interpreter is what a user's batch job has.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest

from aiestack.batch import BatchRunner, InProcessRunner, RayRunner, open_runner
from aiestack.settings import ComputeSettings
from aiestack.testing.batch import BatchRunnerConformance


class TestInProcessOneThread(BatchRunnerConformance):
    @pytest.fixture
    async def runner(self) -> AsyncIterator[BatchRunner]:
        runner = InProcessRunner(1)
        yield runner
        await runner.aclose()


class TestInProcessFourThreads(BatchRunnerConformance):
    @pytest.fixture
    async def runner(self) -> AsyncIterator[BatchRunner]:
        runner = InProcessRunner(4)
        yield runner
        await runner.aclose()


_RAY_INNER = "AIESTACK_RAY_TESTS_INNER"


@pytest.mark.slow
def test_the_ray_tests_pass_in_their_own_interpreter() -> None:
    pytest.importorskip("ray")
    if os.environ.get(_RAY_INNER) == "1":
        pytest.skip("this is the inner run")
    env = {**os.environ, _RAY_INNER: "1", "RAY_gcs_server_port_wait_time_s": "120"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-k", "ray or Ray",
         "--timeout", "300"],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    tail = result.stdout[-3000:] + result.stderr[-2000:]
    assert result.returncode == 0, tail
    summary = result.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, tail
    assert int(summary.split(" passed")[0].split()[-1]) >= 10, tail  # the conformance suite (eval scoring too), ingestion and curation ran


@pytest.fixture(scope="module")
def ray_runner() -> Iterator[RayRunner]:
    pytest.importorskip("ray")
    if os.environ.get(_RAY_INNER) != "1":
        pytest.skip("runs in its own interpreter (test_the_ray_tests_pass_in_their_own_interpreter)")
    runner = RayRunner("local", workers=2, num_cpus=2)
    yield runner
    asyncio.run(runner.aclose())


@pytest.mark.slow
class TestRay(BatchRunnerConformance):
    @pytest.fixture
    def runner(self, ray_runner: RayRunner) -> RayRunner:
        return ray_runner


@pytest.mark.unit
def test_the_compute_settings_pick_the_runner() -> None:
    assert isinstance(open_runner(ComputeSettings()), InProcessRunner)
    ray = open_runner(ComputeSettings(ray_address="ray://head:10001", ray_workers=3))
    assert isinstance(ray, RayRunner) and ray.name == "ray"
    assert isinstance(ray, BatchRunner) and isinstance(InProcessRunner(), BatchRunner)


@pytest.mark.unit
def test_bad_worker_counts_are_refused() -> None:
    with pytest.raises(ValueError):
        InProcessRunner(0)
    with pytest.raises(ValueError):
        RayRunner("local", workers=0)


# --------------------------------------------------------------------------- ingestion on Ray


@pytest.fixture(scope="module")
def embedding_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The fake OpenAI-compatible upstream's /v1 URL (hashed bag-of-words embeddings), in its own process."""
    from aiestack.testing.cluster import ServerProcess, clean_env, free_port, upstream_command

    port = free_port()
    log = tmp_path_factory.mktemp("embedding-upstream") / "upstream.log"
    with ServerProcess("upstream", upstream_command(port), port=port, log=log, env=clean_env(),
                       ready_path="/stats") as process:
        yield f"{process.url}/v1"


@pytest.mark.slow
async def test_ingestion_embedded_on_ray_stores_exactly_what_in_process_ingestion_stores(
    tmp_path: Path, ray_runner: RayRunner, embedding_upstream: str
) -> None:
    from aiestack.context.ingest import IngestOptions, ingest
    from aiestack.models.embeddings_batch import RunnerEmbeddings
    from aiestack.models.embeddings_open import open_embedding_model
    from aiestack.settings import EmbeddingSettings
    from aiestack.stores.documents_memory import MemoryDocumentStore

    for i in range(6):
        words = " ".join(f"word{(i * 7 + j) % 50}" for j in range(300))
        (tmp_path / f"doc{i}.txt").write_text(f"Document {i}. {words}", encoding="utf-8")
    config = EmbeddingSettings(provider="openai", model="fake-embed", base_url=embedding_upstream,
                               batch_size=4, cache=False).model_dump()
    options = IngestOptions(chunk_size=64, overlap=8)

    here, there = MemoryDocumentStore(), MemoryDocumentStore()
    local = open_embedding_model(**config)
    distributed = RunnerEmbeddings(ray_runner, config)
    try:
        report_here = await ingest([str(tmp_path)], "docs", here, local, options=options)
        report_there = await ingest([str(tmp_path)], "docs", there, distributed, options=options)
    finally:
        await local.aclose()
        await distributed.inner.aclose()  # the module's Ray instance stays up for the other tests

    assert report_here.chunks == report_there.chunks > 6 * 4  # several batches of 4 went to Ray
    assert (report_here.added, report_here.failed) == (report_there.added, report_there.failed) == (6, ())
    probe = open_embedding_model(**config)
    for query in ("word3 word10", "Document 4", "word49 word0 word21"):
        vector = (await probe.embed([query]))[0]
        hits_here = here.vector_search("docs", vector, k=50)
        hits_there = there.vector_search("docs", vector, k=50)
        assert [(h.chunk.id, h.chunk.text, h.score) for h in hits_here] == [
            (h.chunk.id, h.chunk.text, h.score) for h in hits_there
        ]
    await probe.aclose()


@pytest.mark.slow
async def test_semantic_dedup_embedded_on_ray_removes_exactly_what_in_process_dedup_removes(
    ray_runner: RayRunner, embedding_upstream: str
) -> None:
    from aiestack.datasets import DatasetRow, normalise
    from aiestack.datasets.curate import SemanticDedup
    from aiestack.models.base import EmbeddingModel
    from aiestack.models.embeddings_batch import RunnerEmbeddings
    from aiestack.models.embeddings_open import open_embedding_model
    from aiestack.settings import EmbeddingSettings

    # The fake upstream embeds a bag of words: reordered words are duplicates, new words are not.
    rows = [DatasetRow(normalise({"question": " ".join(f"w{(i * 3 + j) % 40}" for j in range(8)), "answer": f"a{i % 5}"}, "chat"))
            for i in range(24)]
    rows += [DatasetRow(normalise({"question": " ".join(reversed(r.data["messages"][0]["content"].split())),
                                   "answer": r.data["messages"][1]["content"]}, "chat")) for r in rows[::3]]
    config = EmbeddingSettings(provider="openai", model="fake-embed", base_url=embedding_upstream,
                               batch_size=4, cache=False).model_dump()
    loop = asyncio.get_running_loop()

    def on_loop(model: EmbeddingModel) -> SemanticDedup:
        def embed(texts: Sequence[str]) -> list[list[float]]:
            return asyncio.run_coroutine_threadsafe(model.embed(list(texts)), loop).result()

        return SemanticDedup(embed, 0.95, verify=False, batch=32)  # one map: actors start once

    local, distributed = open_embedding_model(**config), RunnerEmbeddings(ray_runner, config)
    try:
        kept_here, report_here = await asyncio.to_thread(on_loop(local).apply, rows)
        kept_there, report_there = await asyncio.to_thread(on_loop(distributed).apply, rows)
    finally:
        await local.aclose()
        await distributed.inner.aclose()
    assert [r.id for r in kept_here] == [r.id for r in kept_there]
    assert report_here.removed == report_there.removed and len(report_here.removed) >= 8


@pytest.mark.unit
async def test_the_stack_embeds_batch_work_on_ray_only_when_compute_asks(tmp_path: Path) -> None:
    from aiestack.build import build_stack
    from aiestack.models.embeddings_batch import RunnerEmbeddings
    from aiestack.settings import ComputeSettings, EmbeddingSettings, Settings

    embeddings = EmbeddingSettings(provider="openai", model="e", base_url="http://127.0.0.1:9/v1", cache=False)
    common = {"data_dir": tmp_path, "embedded_model": False, "default_model": "fake",
              "models": {"fake": {"provider": "fake"}}, "embeddings": embeddings}
    plain = build_stack(Settings(**common))
    try:
        assert plain.batch_embeddings is plain.embeddings
    finally:
        await plain.aclose()
    on_ray = build_stack(Settings(**common, compute=ComputeSettings(ray_address="ray://head:10001")))
    try:
        batch = on_ray.batch_embeddings
        assert isinstance(batch, RunnerEmbeddings) and isinstance(batch.runner, RayRunner)
        assert batch.name == on_ray.embeddings.name  # vectors cached under the same model name
    finally:
        await on_ray.aclose()  # Ray was never started: nothing to stop


@pytest.mark.unit
def test_a_checkpoint_keeps_finished_items_per_inputs_and_survives_a_torn_line(tmp_path: Path) -> None:
    from aiestack.batch import Checkpoint

    first = Checkpoint.open(tmp_path, "step", {"model": "m", "items": ["a", "b"]})
    first.record("a", {"score": 1})
    with first.path.open("a", encoding="utf-8") as out:
        out.write('{"item": "b", "resu')  # killed mid-write
    again = Checkpoint.open(tmp_path, "step", {"items": ["a", "b"], "model": "m"})  # same inputs, any key order
    assert again.path == first.path and again.resumed == 1 and "a" in again and "b" not in again
    assert again.get("a") == {"score": 1}
    again.record("b", [2])
    assert Checkpoint(again.path).get("b") == [2] and Checkpoint(again.path).resumed == 2
    assert Checkpoint.open(tmp_path, "step", {"model": "n", "items": ["a", "b"]}).resumed == 0  # other inputs
    again.finish()
    assert not again.path.exists() and "a" not in again
