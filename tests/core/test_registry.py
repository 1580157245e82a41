"""Registry conflicts and suggestions, entry-point discovery, disabling, hook checks."""

from __future__ import annotations

import pluggy
import pytest

from support import install_fake_distribution, tlbench
from tlbench.plugin.manager import get_plugin_manager
from tlbench.plugin.registry import UnknownName, collect
from tlbench.plugin.specs import PluginError

CLASH = '''
import tlbench
from tlbench.plugin.specs import StrategySpec, TrainPlan

@tlbench.hookimpl
def tlbench_register_strategies():
    yield StrategySpec("extractor", plan=lambda options, dataset: TrainPlan())
'''


def test_third_party_plugin_is_discovered_through_its_entry_point(toy_plugin):
    registries = collect()
    assert "stripes" in registries.datasets
    assert registries.backbones.provider("toy/centroid") == "toy (tlbench-toy 1.0)"
    assert registries.plugin_manager.distributions["toy"] == ("tlbench-toy", "1.0")


def test_plugins_command_lists_distribution_and_what_it_registers(toy_plugin):
    result = tlbench("plugins")
    assert result.returncode == 0, result.stderr
    toy_line = next(line for line in result.stdout.splitlines() if line.startswith("toy "))
    assert "tlbench-toy" in toy_line and "1 datasets, 2 backbones, 1 engines" in toy_line
    assert "8 strategies" in next(row for row in result.stdout.splitlines() if row.startswith("strategies "))


def test_disable_plugins_env_blocks_by_name(toy_plugin, monkeypatch):
    monkeypatch.setenv("TLBENCH_DISABLE_PLUGINS", "toy, strategies")
    registries = collect()
    assert "stripes" not in registries.datasets
    assert len(registries.strategies) == 0


def test_duplicate_name_names_both_distributions(toy_plugin):
    install_fake_distribution(toy_plugin, "tlbench-clash", "clash", "tlbench_clash_plugin", CLASH)
    with pytest.raises(PluginError) as info:
        collect()
    message = str(info.value)
    assert "strategy 'extractor' is registered twice" in message
    assert "(tlbench " in message and "clash (tlbench-clash 1.0)" in message


def test_unknown_name_suggests_close_names(toy_plugin):
    registries = collect()
    with pytest.raises(UnknownName) as info:
        registries.backbones.get("timm/mobilenetv2_10")
    assert "did you mean" in str(info.value) and "'timm/mobilenetv2_100'" in str(info.value)
    with pytest.raises(UnknownName, match="did you mean 'stripes'"):
        registries.datasets.get("stripse")


def test_wildcard_selection(toy_plugin):
    registries = collect()
    resnets = [s.name for s in registries.backbones.select("timm/resnet*")]
    assert "timm/resnet18" in resnets and "timm/resnet50" in resnets
    assert all(n.startswith("timm/resnet") for n in resnets)
    assert [s.name for s in registries.strategies.select("*tract*")] == ["extractor"]


def test_misspelled_hook_fails_loudly(fake_site):
    source = "import tlbench\n\n@tlbench.hookimpl\ndef tlbench_register_dataset():\n    return []\n"
    install_fake_distribution(fake_site, "tlbench-typo", "typo", "tlbench_typo_plugin", source)
    with pytest.raises(pluggy.PluginValidationError, match="tlbench_register_dataset"):
        get_plugin_manager()


def test_broken_plugin_is_reported_not_fatal(fake_site):
    install_fake_distribution(fake_site, "tlbench-broken", "broken", "tlbench_broken_plugin", "raise ImportError('no')\n")
    pm = get_plugin_manager()
    assert "broken" in pm.failed
    result = tlbench("plugins")
    assert "FAILED TO LOAD" in result.stdout


def test_bad_spec_names_are_rejected(fake_site):
    source = ("import tlbench\nfrom tlbench.plugin.specs import StrategySpec, TrainPlan\n\n@tlbench.hookimpl\n"
              "def tlbench_register_strategies():\n    yield StrategySpec('bad name!', plan=lambda o, d: TrainPlan())\n")
    install_fake_distribution(fake_site, "tlbench-badname", "badname", "tlbench_badname_plugin", source)
    with pytest.raises(PluginError, match="'bad name!'"):
        collect()


def test_a_strategy_of_an_unknown_family_is_refused_by_name():
    from tlbench.plugin.specs import PluginError, StrategySpec, TrainPlan

    with pytest.raises(PluginError, match="strategy 'mine': family 'finetuning' is not one of extractor, finetune, "):
        StrategySpec("mine", plan=lambda options, data: TrainPlan(), family="finetuning")
