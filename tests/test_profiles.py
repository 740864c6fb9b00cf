import pytest

from webchat.errors import UnknownProfileError
from webchat.profiles import ProfileFileError, ProfileRegistry

ISSUE_EXAMPLE = """
profiles:
  - slug: default
    display_name: Default
    default_prompt: You are a helpful assistant. Be concise.
    allow_overrides: true
    tools: [calculator]
    middlewares: []
    step_settings: {api_type: offline, tokens_per_second: 0}
  - slug: strict
    default_prompt: Only facts.
    default_middlewares: [{name: logging, config: {level: info}}]
    default_tools: []
    step_settings: {api_type: openai, model: gpt-4o-mini, temperature: 0.1}
"""


def test_loads_the_documented_yaml_shape(tmp_path):
    path = tmp_path / "profiles.yaml"
    path.write_text(ISSUE_EXAMPLE)
    registry = ProfileRegistry.from_file(path)
    assert [p.slug for p in registry.all()] == ["default", "strict"]
    default = registry.get("default")
    assert default.allow_overrides and default.tools == ["calculator"]
    assert default.step_settings.api_type == "offline"
    strict = registry.get("strict")
    assert strict.title == "strict"
    assert strict.middlewares[0].name == "logging"
    assert strict.middlewares[0].config == {"level": "info"}
    assert strict.step_settings.temperature == 0.1
    assert not strict.allow_overrides


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("profiles: [\n", "not valid YAML"),
        ("profiles:\n  - slug: a\n  - slug: a\n", "defined twice"),
        ("profiles:\n  - slug: a\n    colour: red\n", "colour"),
        ("profiles:\n  - slug: 'bad slug!'\n", "slug"),
        ("profiles: []\n", "at least one profile"),
        ("profiles:\n  - slug: a\n    step_settings: {api_type: gemini}\n", "api_type"),
        ("profiles:\n  - slug: a\n    overridable_settings: [api_key]\n", "cannot be overridable"),
    ],
)
def test_bad_profile_files_say_what_is_wrong(text, fragment):
    with pytest.raises(ProfileFileError, match=fragment):
        ProfileRegistry.from_yaml_text(text)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ProfileFileError, match="cannot read profiles file"):
        ProfileRegistry.from_file(tmp_path / "nope.yaml")


def test_unknown_profile_is_a_404_error():
    with pytest.raises(UnknownProfileError) as info:
        ProfileRegistry.builtin().get("nope")
    assert info.value.status_code == 404


def test_builtin_default_is_offline_without_keys():
    assert ProfileRegistry.builtin().get("default").step_settings.api_type == "offline"
    with_openai = ProfileRegistry.builtin(openai_key="sk-x").get("default")
    assert with_openai.step_settings.api_type == "openai"
    with_anthropic = ProfileRegistry.builtin(anthropic_key="sk-ant").get("default")
    assert with_anthropic.step_settings.api_type == "anthropic"
