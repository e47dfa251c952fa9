"""Every built-in backend passes the feedback, conversation-turn and prompt conformance mixins."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.stores.exchanges_sql import SqlExchangeStore
from aiestack.testing.feedback_conformance import (
    FeedbackStoreConformance,
    PendingFeedbackStoreConformance,
    PromptStoreConformance,
)


@pytest.mark.unit
class TestMemoryFeedbackStore(FeedbackStoreConformance, PendingFeedbackStoreConformance, PromptStoreConformance):
    @pytest.fixture
    def store(self) -> MemoryExchangeStore:
        return MemoryExchangeStore()


@pytest.mark.unit
class TestSqliteFeedbackStore(FeedbackStoreConformance, PendingFeedbackStoreConformance, PromptStoreConformance):
    @pytest.fixture
    def store(self, sqlite_url: str) -> Iterator[SqlExchangeStore]:
        store = SqlExchangeStore(sqlite_url)
        store.migrate()
        yield store
        store.close()


@pytest.mark.integration
class TestPostgresFeedbackStore(FeedbackStoreConformance, PendingFeedbackStoreConformance, PromptStoreConformance):
    @pytest.fixture
    def store(self, pg_url: str) -> Iterator[SqlExchangeStore]:
        store = SqlExchangeStore(pg_url)
        store.migrate()
        yield store
        store.close()
