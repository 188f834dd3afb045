"""docs/rules.md stays true: every rule is documented, every module, function and test it cites
exists, and the README points only inside the repository. Text only: no database."""

import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "docs" / "rules.md"
CODE_REF = re.compile(r"`((?:domain|projections|replay|adapters)/[\w/]+\.py): ([\w.]+)`")
TEST_NAME = re.compile(r"`(test_\w+)`")
TEST_FILE = re.compile(r"`(tests/[\w/]+\.(?:py|json))`")


@cache
def rules_text() -> str:
    return RULES.read_text("utf-8")


@cache
def defined_tests() -> frozenset[str]:
    names = set()
    for path in (ROOT / "tests").glob("test_*.py"):
        names |= set(re.findall(r"^\s*def (test_\w+)", path.read_text("utf-8"), re.MULTILINE))
    return frozenset(names)


def defines(source: str, name: str) -> bool:
    return re.search(rf"^\s*(?:async\s+)?(?:def|class)\s+{re.escape(name)}\b", source, re.MULTILINE) is not None


@pytest.mark.parametrize("rule", range(1, 28))
def test_every_rule_has_its_own_section_citing_code_and_tests(rule: int) -> None:
    sections = re.split(r"^### ", rules_text(), flags=re.MULTILINE)
    section = next((s for s in sections if s.startswith(f"R{rule} ")), None)
    assert section is not None, f"docs/rules.md has no section for R{rule}"
    assert CODE_REF.search(section), f"R{rule} cites no code"
    assert TEST_NAME.search(section), f"R{rule} cites no test"


def test_every_cited_module_exists_and_defines_the_cited_function() -> None:
    refs = CODE_REF.findall(rules_text())
    assert refs
    missing = []
    for module, name in refs:
        path = ROOT / module
        if not path.is_file():
            missing.append(f"{module} (no such file)")
            continue
        source = path.read_text("utf-8")
        missing += [f"{module}: {part}" for part in name.split(".") if not defines(source, part)]
    assert not missing, f"docs/rules.md cites code that does not exist: {missing}"


def test_every_cited_test_exists() -> None:
    text = rules_text()
    missing = sorted(set(TEST_NAME.findall(text)) - defined_tests())
    missing += [f for f in TEST_FILE.findall(text) if not (ROOT / f).is_file()]
    assert not missing, f"docs/rules.md cites tests that do not exist: {missing}"


def test_readme_points_only_inside_the_repository() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    assert "../shared" not in readme
    assert "docs/rules.md" in readme and "docs/payments.md" in readme
