"""The README's dataset documentation names every option of ``folder`` and every domain label in use."""

from __future__ import annotations

import re

from support import REPO
from tlbench.plugin.registry import collect
from tlbench.report.document import SIMILAR_DOMAINS


def bullet(start: str) -> str:
    text = (REPO / "README.md").read_text()
    return text[text.index(f"- {start}"):].split("\n- ")[0]


def test_the_readme_names_the_folder_options_and_the_domain_vocabulary():
    datasets = collect().datasets
    folder = bullet("The `folder` dataset")
    assert all(f"`{option}`" in folder for option in datasets.get("folder").options)
    domains = bullet("**Domains.**")
    similar, different = domains.split("every other label")
    assert set(re.findall(r"`([a-z-]+)` counts as \*similar\*", similar)) == set(SIMILAR_DOMAINS)
    declared = {spec.domain for spec in datasets.select("*")} - {"unknown"}
    assert {d for d in declared - set(SIMILAR_DOMAINS) if f"`{d}`" not in different} == set()
