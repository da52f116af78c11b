"""The layers of bot/, kept by reading every module's imports (docs/ARCHITECTURE.md):

    core (bot.core, bot.config, bot.logsafe) <- store (bot.store) <- runtime (bot.runtime: the feature seam)
      <- features (bot.escalation, bot.agents) <- the feature set (bot.features)
      <- doors (bot.tg, bot.terminal, bot.diagram) <- the top (bot.__main__, bot.testing)

A module imports only from its own layer or lower ones; packages of one layer do not import
each other (a feature reads another's data through a port, a door never calls another door).
Imports under ``if TYPE_CHECKING:`` are types only and not counted. Only the Telegram door
(and the test kit that drives it) imports ``telegram``. No import cycle, and an import of a
bot module (or of ``telegram``) inside a function, outside the top, carries a comment saying
why it is deferred.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOT = ROOT / "bot"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("bot.core", "bot.config", "bot.logsafe"),
    ("bot.store",),
    ("bot.learning",),
    ("bot.runtime",),
    ("bot.escalation", "bot.agents"),
    ("bot.features",),
    ("bot.tg", "bot.terminal", "bot.diagram"),
    ("bot.__main__", "bot.testing"),
)
TELEGRAM_ALLOWED = ("bot.tg", "bot.testing")
DEFERRED_OK = ("bot.__main__", "bot.testing")  # command-line entry points: load only what a command needs


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # what it imports (absolute)
    line: int
    local: bool  # inside a function
    typing_only: bool  # under ``if TYPE_CHECKING:``
    commented: bool  # a comment on its line or the line above


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def imports() -> list[Import]:
    found: list[Import] = []
    for path in sorted(BOT.rglob("*.py")):
        module = _name(path)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        tree = ast.parse(source)

        def commented(lineno: int, lines: list[str] = lines) -> bool:
            """A comment on the line, or above the block of imports it belongs to."""
            if "#" in lines[lineno - 1]:
                return True
            for above in reversed(lines[: lineno - 1]):
                text = above.strip()
                if "#" in text:  # a comment line, or one on the statement that opens the block
                    return True
                if text and not text.startswith(("import ", "from ")):
                    return False
            return False

        def visit(node: ast.AST, local: bool, typing_only: bool, module: str = module, package: str = package) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and _type_checking(child):
                    visit(child, local, True)
                    continue
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                    visit(child, True, typing_only)
                    continue
                targets: list[str] = []
                if isinstance(child, ast.Import):
                    targets = [a.name for a in child.names]
                elif isinstance(child, ast.ImportFrom):
                    if child.level:
                        base = package.split(".")
                        base = base[: len(base) - (child.level - 1)]
                        if child.module:
                            targets = [".".join([*base, child.module])]
                        else:
                            targets = [".".join([*base, a.name]) for a in child.names]
                    else:
                        assert child.module is not None
                        targets = [child.module]
                for t in targets:
                    found.append(Import(module, t, child.lineno, local, typing_only, commented(child.lineno)))
                visit(child, local, typing_only)

        visit(tree, False, False)
    return found


def _layer(module: str) -> tuple[int, str] | None:
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                return rank, prefix
    return None


def test_every_module_has_a_layer() -> None:
    missing = sorted({i.module for i in imports() if _layer(i.module) is None and i.module != "bot"})
    assert missing == [], f"add these to LAYERS (and docs/ARCHITECTURE.md): {missing}"


def test_no_module_imports_a_higher_layer_or_a_sibling_package() -> None:
    wrong = []
    for i in imports():
        if i.typing_only or not i.target.startswith("bot.") or i.module == "bot":
            continue
        mine, theirs = _layer(i.module), _layer(i.target)
        assert mine is not None and theirs is not None, i
        if theirs[0] > mine[0]:
            wrong.append(f"{i.module}:{i.line} imports {i.target} from a higher layer")
        elif theirs[0] == mine[0] and theirs[1] != mine[1] and mine[0] not in (0, len(LAYERS) - 1):
            wrong.append(f"{i.module}:{i.line} imports {i.target} from a sibling package")
    assert wrong == []


def test_only_the_telegram_door_imports_telegram() -> None:
    wrong = [
        f"{i.module}:{i.line}"
        for i in imports()
        if (i.target == "telegram" or i.target.startswith("telegram."))
        and not i.module.startswith(TELEGRAM_ALLOWED)
    ]
    assert wrong == []


def test_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {}
    modules = {_name(p) for p in BOT.rglob("*.py")}
    for i in imports():
        if i.typing_only or i.local or not i.target.startswith("bot"):
            continue
        target = i.target
        while target not in modules and "." in target:  # "from pkg.mod import name"
            target = target.rpartition(".")[0]
        if target != i.module:
            graph.setdefault(i.module, set()).add(target)
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def walk(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                cycles.append([*path[path.index(n) :], n])
            elif n not in state:
                walk(n)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            walk(m)
    assert cycles == []


def test_imports_inside_functions_say_why() -> None:
    silent = [
        f"{i.module}:{i.line} imports {i.target}"
        for i in imports()
        if i.local
        and not i.typing_only
        and not i.commented
        and not i.module.startswith(DEFERRED_OK)
        and i.target.startswith(("bot", "telegram"))  # optional packages (numpy...) load where used
    ]
    assert silent == [], "import at the top, or say in a comment why it waits (start-up cost)"


def test_the_layer_test_sees_a_violation() -> None:
    """The checks above read real imports: a made-up store module importing a door is caught."""
    assert _layer("bot.store.sqlite") == (1, "bot.store") and _layer("bot.tg.door") == (6, "bot.tg")
    fake = Import("bot.store.sqlite", "bot.tg.door", 1, False, False, False)
    mine, theirs = _layer(fake.module), _layer(fake.target)
    assert mine is not None and theirs is not None and theirs[0] > mine[0]
    assert any(i.module == "bot.tg.door" and i.target.startswith("telegram") for i in imports())


def test_architecture_page_names_only_paths_that_exist() -> None:
    """docs/ARCHITECTURE.md stays true: every file or folder it names is there."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:bot|content|flows|tests|docs|deploy)/[\w./<>*-]*)`", text))
    missing = [p for p in sorted(named) if "<" not in p and "*" not in p and not (ROOT / p.rstrip("/")).exists()]
    assert named and missing == []


def test_no_private_name_is_imported_from_another_module() -> None:
    """A module's ``_names`` are its own: what another module needs has a public name (the
    database seam's ``statements``, not ``_SQLiteTx``)."""
    private: list[str] = []
    for path in sorted(BOT.rglob("*.py")):
        module = _name(path)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom) or node.module == "__future__":
                continue
            source = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join([*base, source]) if source else ".".join(base)
            if not source.startswith("bot"):
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    private.append(f"{module}:{node.lineno} imports {source}.{alias.name}")
    assert private == []


def test_settings_are_read_in_config_only() -> None:
    """The environment is read in bot/config.py (``Settings.from_env``), nowhere else in the
    product — except where the reason is written here."""
    reasons = {
        "bot/tg/__init__.py": "sets python-telegram-bot's own switch before it is imported",
        "bot/tg/healthcheck.py": "the container's health check: a process of its own, no Settings",
        "bot/core/semantic.py": "the model cache and its off switch (another change moves them)",
    }
    readers = sorted(
        str(p.relative_to(ROOT))
        for p in BOT.rglob("*.py")
        if re.search(r"\bos\.environ\b|\bgetenv\(|\b_os\.environ\b", p.read_text(encoding="utf-8"))
        and not str(p.relative_to(ROOT)).startswith(("bot/config.py", "bot/testing/"))
    )
    assert [r for r in readers if r not in reasons] == []
