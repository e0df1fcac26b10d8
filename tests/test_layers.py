"""The package's floors: a module imports only from its own floor or lower ones (read from the source with ast)."""

import ast
import sys
from pathlib import Path

import nnunet_lite

PACKAGE = Path(nnunet_lite.__file__).resolve().parent
# Floor of each top-level module or subpackage, bottom first. A new top-level module defaults to the feature floor.
BOTTOM, NETWORKS, TRAINERS, FEATURES, COMMANDS = range(5)
FLOORS = {
    "__init__": BOTTOM,
    "_autoenv": BOTTOM,
    "atomic": BOTTOM,
    "nnunet_env": BOTTOM,
    "architectures": NETWORKS,
    "profiling": NETWORKS,
    "synthetic": NETWORKS,
    "trainer_base": TRAINERS,
    "trainers": TRAINERS,
    "nnunet_ext": TRAINERS,
    "commands": COMMANDS,
    "cli": COMMANDS,
    "__main__": COMMANDS,
}


def top_level(dotted: str) -> str:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: Path, package_dir: Path = PACKAGE) -> list[tuple[str, int]]:
    """``(absolute module, line)`` for every import in ``path``, relative imports resolved."""
    module = ".".join(("nnunet_lite", *path.relative_to(package_dir).with_suffix("").parts))
    package = module.removesuffix(".__init__") if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, node.lineno))
    return out


def test_no_module_imports_from_a_higher_floor():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = top_level(".".join(("nnunet_lite", *path.relative_to(PACKAGE).with_suffix("").parts)))
        floor = FLOORS.get(source, FEATURES)
        for target, line in imports(path):
            if target.split(".")[0] == "nnunet_lite" and FLOORS.get(top_level(target), FEATURES) > floor:
                violations.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not violations, "imports from a higher floor:\n" + "\n".join(violations)


def test_bottom_floor_needs_only_the_standard_library():
    """The startup hook runs in every interpreter: its imports must be cheap and can never fail."""
    for name in (n for n, f in FLOORS.items() if f == BOTTOM):
        for target, line in imports(PACKAGE / f"{name}.py"):
            root = target.split(".")[0]
            assert root in sys.stdlib_module_names or root in ("__future__", "nnunet_lite"), (
                f"{name}.py:{line} {target}"
            )


def test_relative_imports_are_resolved(tmp_path):
    """``from ..commands.env import X`` in architectures/ resolves to nnunet_lite.commands.env, so it is caught."""
    bad = tmp_path / "architectures" / "bad.py"
    bad.parent.mkdir()
    bad.write_text("from ..commands.env import HOOK_LINE\nfrom . import blocks\n")
    assert imports(bad, tmp_path) == [("nnunet_lite.commands.env", 1), ("nnunet_lite.architectures", 2)]


def test_building_the_cli_parser_does_not_import_torch():
    """Every subcommand registers its parser without heavy imports: ``nnunet_lite --help`` stays fast, and
    ``predict`` can still set thread settings (OMP_WAIT_POLICY) before torch loads."""
    import subprocess

    code = (
        "import sys, nnunet_lite.cli as c; c.build_parser(); "
        "print(sorted(m for m in ('torch', 'nnunetv2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
