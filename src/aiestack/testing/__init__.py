"""Helpers for testing aiestack and its plugins.

:mod:`aiestack.testing.conformance` holds the store conformance test mixins every backend passes
(it imports pytest, so it is imported only when asked for)::

    from aiestack.testing.conformance import ExchangeStoreConformance

:mod:`aiestack.testing.feedback_conformance` holds those of feedback, conversation turns and prompts
(``FeedbackStoreConformance``, ``PromptStoreConformance``).
"""
