import subprocess
import sys

import pytest

from lmshrink.errors import ConfigError
from lmshrink.registry import Registry


def test_register_returns_the_object_and_get_finds_it():
    reg: Registry[object] = Registry("loss")

    @reg.register("soft_kl")
    class SoftKL:
        pass

    def fn():
        return 1

    assert reg.register("plain_fn")(fn) is fn
    assert reg.get("soft_kl") is SoftKL
    assert reg.get("plain_fn") is fn


def test_names_are_sorted_and_contains_works():
    reg: Registry[int] = Registry("student")
    for name in ["zeta", "alpha2", "mid_name"]:
        reg.register(name)(len(name))
    assert reg.names() == ["alpha2", "mid_name", "zeta"]
    assert "alpha2" in reg
    assert "beta" not in reg
    assert 3 not in reg


@pytest.mark.parametrize(
    "bad", ["", "SoftKL", "soft-kl", "2layer", "_private", "soft kl", "soft.kl", "é"]
)
def test_invalid_names_are_refused_at_registration(bad):
    reg: Registry[int] = Registry("loss")
    with pytest.raises(ValueError, match="invalid"):
        reg.register(bad)
    assert reg.names() == []


@pytest.mark.parametrize("good", ["a", "soft_kl", "bilstm2", "x_1_y"])
def test_valid_names_are_accepted(good):
    reg: Registry[int] = Registry("loss")
    reg.register(good)(1)
    assert reg.names() == [good]


def test_duplicate_name_is_refused_and_keeps_the_first():
    reg: Registry[str] = Registry("loss")
    reg.register("soft_kl")("first")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("soft_kl")
    assert reg.get("soft_kl") == "first"


def test_duplicate_between_two_pending_decorators_is_refused():
    reg: Registry[str] = Registry("loss")
    first, second = reg.register("same"), reg.register("same")
    first("a")
    with pytest.raises(ValueError, match="already registered"):
        second("b")
    assert reg.get("same") == "a"


def test_unknown_name_is_a_config_error_listing_the_known_names():
    reg: Registry[int] = Registry("loss")
    for name in ["soft_kl", "gold_ce", "hard_label"]:
        reg.register(name)(0)
    with pytest.raises(ConfigError) as info:
        reg.get("sofkl")
    message = str(info.value)
    assert message.startswith("unknown loss 'sofkl'")
    assert message.endswith("; known losses: gold_ce, hard_label, soft_kl.")
    assert "did you mean 'soft_kl'?" in message


def test_unknown_name_in_an_empty_registry_and_plural_of_kind():
    with pytest.raises(ConfigError, match="unknown student 'x'; no students are registered"):
        Registry("student").get("x")
    reg: Registry[int] = Registry("student")
    reg.register("bilstm")(0)
    with pytest.raises(ConfigError, match="known students: bilstm"):
        reg.get("bert")


def test_registry_module_does_not_import_torch():
    code = "import sys, lmshrink.registry; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_items_keep_the_registration_order_and_remove_unregisters():
    reg: Registry[int] = Registry("loss")
    for i, name in enumerate(["zeta", "alpha"]):
        reg.register(name)(i)
    assert reg.items() == [("zeta", 0), ("alpha", 1)]
    assert reg.remove("zeta") == 0
    assert reg.names() == ["alpha"] and "zeta" not in reg
    with pytest.raises(ConfigError, match="unknown loss 'zeta'"):
        reg.remove("zeta")
    reg.register("zeta")(2)  # the name is free again
    assert reg.get("zeta") == 2


def test_the_builtins_module_is_imported_on_the_first_lookup(tmp_path, monkeypatch):
    """A registry can live in a light module and name the heavy one that fills it."""
    import types

    holder = types.ModuleType("registry_holder_for_test")
    holder.REG = Registry("loss", builtins="registry_builtins_for_test")
    monkeypatch.setitem(sys.modules, "registry_holder_for_test", holder)
    (tmp_path / "registry_builtins_for_test.py").write_text(
        "import registry_holder_for_test as h\nh.REG.register('from_builtins')(7)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "registry_builtins_for_test", raising=False)
    assert "registry_builtins_for_test" not in sys.modules  # not imported by making it
    assert holder.REG.get("from_builtins") == 7
    assert "registry_builtins_for_test" in sys.modules
    assert holder.REG.names() == ["from_builtins"]  # imported once: no duplicate error
