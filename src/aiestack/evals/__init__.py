"""Evaluation: datasets, metrics, AI judges, comparative ranking, suites, regression gates, reports."""
