"""Versioned prompt templates with labels, A/B splits, and the Prompt stage (see docs/prompts.md)."""

from aiestack.prompts.registry import (
    DEFAULT_LABEL,
    PromptRef,
    PromptRegistry,
    PromptSpec,
    choose,
    parse_ref,
    parse_spec,
)
from aiestack.prompts.stage import Prompt, PromptUnavailable, bucket, render_version, route_prompt_specs
from aiestack.prompts.templates import Renderer, TemplateError, diff_versions, infer_variables

__all__ = [
    "DEFAULT_LABEL",
    "Prompt",
    "PromptRef",
    "PromptRegistry",
    "PromptSpec",
    "PromptUnavailable",
    "Renderer",
    "TemplateError",
    "bucket",
    "choose",
    "diff_versions",
    "infer_variables",
    "parse_ref",
    "parse_spec",
    "render_version",
    "route_prompt_specs",
]
