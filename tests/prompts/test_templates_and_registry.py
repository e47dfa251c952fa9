"""Templates (strict rendering, inferred variables, diffs) and the registry (refs, specs, labels, caching, A/B)."""

from __future__ import annotations

import collections

import pytest

from aiestack.errors import ConfigError, InvalidRequest, NotFound
from aiestack.prompts import (
    PromptRef,
    PromptRegistry,
    Renderer,
    TemplateError,
    choose,
    diff_versions,
    infer_variables,
    parse_ref,
    parse_spec,
)
from aiestack.stores.exchanges_memory import MemoryExchangeStore

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def registry() -> PromptRegistry:
    return PromptRegistry(MemoryExchangeStore(), ttl_s=1.0)


def test_variables_are_inferred_from_the_template() -> None:
    template = "You help {{ customer.name }} with {{ product }}.{% if vip %} Be brief.{% endif %}{% for x in items %}{{ x }}{% endfor %}"
    assert infer_variables(template) == ("customer", "items", "product", "vip")


def test_a_template_that_does_not_parse_says_where() -> None:
    with pytest.raises(TemplateError, match="line 1"):
        infer_variables("Hello {{ name ")


def test_rendering_is_strict_about_missing_variables(registry: PromptRegistry) -> None:
    version, _ = registry.push("support", "Help with {{ product }} for {{ customer }}.")
    renderer = Renderer()
    assert renderer.render(version, {"product": "routers", "customer": "Ada"}) == "Help with routers for Ada."
    with pytest.raises(TemplateError) as err:
        renderer.render(version, {"product": "routers"})
    assert "customer" in err.value.message and err.value.http_status == 400
    nested, _ = registry.push("nested", "{{ user.name }}")
    with pytest.raises(TemplateError, match="failed to render"):
        renderer.render(nested, {"user": {}})


def test_templates_are_sandboxed(registry: PromptRegistry) -> None:
    version, _ = registry.push("evil", "{{ x.__class__.__mro__ }}")
    with pytest.raises(Exception, match=r"unsafe|__class__"):
        Renderer().render(version, {"x": "s"})


def test_diff_is_unified_between_versions(registry: PromptRegistry) -> None:
    a, _ = registry.push("support", "line one\nline two\n")
    b, _ = registry.push("support", "line one\nline 2\n")
    diff = diff_versions(a, b)
    assert diff.splitlines()[:2] == ["--- support@1", "+++ support@2"]
    assert "-line two" in diff.splitlines() and "+line 2" in diff.splitlines()
    assert diff_versions(a, a) == ""


def test_refs_parse_labels_and_versions() -> None:
    assert parse_ref("support") == PromptRef("support", label="production")
    assert parse_ref("support@staging") == PromptRef("support", label="staging")
    assert parse_ref("support@12") == PromptRef("support", version=12)
    for bad in ("Support", "sup port@x", "support@0", "support@Bad Label", "@x"):
        with pytest.raises(InvalidRequest):
            parse_ref(bad)


def test_specs_parse_weights_and_name_the_config_key() -> None:
    spec = parse_spec("support@production:90, support@canary:10")
    assert [(str(r), w) for r, w in spec.arms] == [("support@production", 90.0), ("support@canary", 10.0)]
    assert str(parse_spec("support@3")) == "support@3"
    for bad in ("", "support@production:0", "Support", "support@production:x", "a@b, a@b"):
        with pytest.raises(ConfigError) as err:
            parse_spec(bad, key="routes.help.prompt")
        assert err.value.key == "routes.help.prompt"


def test_ab_choice_is_stable_per_bucket_and_follows_the_weights() -> None:
    spec = parse_spec("support@production:90, support@canary:10")
    assert all(choose(spec, "user-1") == choose(spec, "user-1") for _ in range(5))
    counts = collections.Counter(choose(spec, f"user-{i}").label for i in range(4000))
    assert 0.87 < counts["production"] / 4000 < 0.93
    assert choose(parse_spec("support@staging"), "anyone") == PromptRef("support", label="staging")


def test_push_numbers_versions_labels_and_is_a_no_op_when_unchanged(registry: PromptRegistry) -> None:
    v1, created1 = registry.push("support", "Hi {{ name }}", label="production", message="first")
    again, created_again = registry.push("support", "Hi {{ name }}")
    assert (v1.version, created1, again.version, created_again) == (1, True, 1, False)
    assert v1.variables == ("name",)
    declared, _ = registry.push("support", "Hello {{ name }}", variables=["tone"])
    assert declared.variables == ("name", "tone")
    assert registry.get("support@production").version == 1
    assert registry.get("support@latest").version == 2
    assert registry.get("support@2").template == "Hello {{ name }}"


def test_missing_prompts_labels_and_versions_say_how_to_fix_them(registry: PromptRegistry) -> None:
    with pytest.raises(NotFound, match="no prompt named 'ghost'") as err:
        registry.get("ghost@production")
    assert "aiestack prompts push ghost" in (err.value.hint or "")
    registry.push("support", "x")
    with pytest.raises(NotFound, match="no label 'canary'") as err:
        registry.get("support@canary")
    assert "aiestack prompts label support 1 canary" in (err.value.hint or "")
    with pytest.raises(NotFound, match="no version 5"):
        registry.set_label("support", "production", 5)
    with pytest.raises(InvalidRequest):
        registry.set_label("support", "latest", 1)


def test_a_moved_label_is_seen_once_the_cache_expires() -> None:
    clock = Clock()
    store = MemoryExchangeStore()
    registry = PromptRegistry(store, ttl_s=1.0, clock=clock)
    other = PromptRegistry(store, ttl_s=1.0, clock=clock)  # e.g. the CLI, another process
    registry.push("support", "one", label="production")
    registry.push("support", "two")
    assert registry.get("support@production").template == "one"
    other.set_label("support", "production", 2)
    clock.now += 0.5
    assert registry.get("support@production").template == "one"  # cached, at most ttl_s old
    clock.now += 0.6
    assert registry.get("support@production").template == "two"
    registry.set_label("support", "production", 1)  # this registry's own moves apply at once
    assert registry.get("support@production").template == "one"
