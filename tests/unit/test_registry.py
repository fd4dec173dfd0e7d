import pytest

from eventproc import Event, HandlerContext, Registry
from eventproc.errors import ConfigError, RegistryError
from eventproc.registry import load_registry


async def noop(event: Event, ctx: HandlerContext) -> None:
    return None


def test_register_and_look_up() -> None:
    registry = Registry()
    registry.register("a.b", noop, description="does a")
    assert registry.get("a.b") is not None and registry.get("a.c") is None
    assert registry.event_types == ["a.b"] and len(registry) == 1 and "a.b" in registry
    entry = registry.get("a.b")
    assert entry is not None and entry.description == "does a"
    assert entry.name.endswith("test_registry.noop")


def test_a_duplicate_name_is_refused_but_a_type_may_be_shared() -> None:
    registry = Registry()
    registry.register("a.b", noop)
    with pytest.raises(
        RegistryError, match=r"handler '.*test_registry\.noop' is registered already"
    ):
        registry.register("a.b", noop)
    registry.register("a.b", noop, name="second")
    assert [entry.name for entry in registry] == [f"{__name__}.noop", "second"]


def test_include_merges_handlers_and_schema_hooks() -> None:
    pack, app = Registry(), Registry()
    pack.register("p.x", noop)

    @pack.on_migrate
    async def hook(connection: object) -> None:
        return None

    app.include(pack)
    assert app.event_types == ["p.x"] and app.schema_hooks == [hook]


def test_load_registry_errors_name_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"HANDLERS='nowhere\.at\.all'"):
        load_registry("nowhere.at.all")
    with pytest.raises(ConfigError, match=r"not an eventproc\.Registry"):
        load_registry("json:dumps")


def test_load_registry_finds_module_attribute() -> None:
    loaded = load_registry("support.handlers")
    assert "test.ok" in loaded
