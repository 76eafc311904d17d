"""The package reads like the pipeline: every module sits in its stage, imports run only from a stage
to the stages below it, and the integer side (the integer model, code generation, the targets, the
commands that only run C) never loads torch."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kd2mcu"

COMMON = "common"  # kd2mcu/__init__, errors, resources, dataio, outputs: usable from every stage
# Each stage and the stages it may import (besides the common modules and itself), lowest first.
MAY_IMPORT = {
    COMMON: set(),
    "quant": set(),
    "codegen": {"quant"},
    "targets": {"quant", "codegen"},
    "train": {"quant", "codegen", "targets"},
    "commands": {"quant", "codegen", "targets", "train"},
    "cli": {"quant", "codegen", "targets", "train", "commands"},
}
COMMON_MODULES = {"kd2mcu", "kd2mcu.errors", "kd2mcu.resources", "kd2mcu.dataio", "kd2mcu.outputs",
                  "kd2mcu.interrupt"}


def stage_of(module: str) -> str:
    if module in COMMON_MODULES:
        return COMMON
    parts = module.split(".")
    if module in ("kd2mcu.cli", "kd2mcu.__main__"):
        return "cli"
    assert len(parts) >= 2 and parts[1] in MAY_IMPORT, f"{module} belongs to no stage"
    return parts[1]


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Every kd2mcu module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "kd2mcu"}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (the package uses absolute kd2mcu.* imports)"
            if node.module and node.module.split(".")[0] == "kd2mcu":
                for alias in node.names:  # `from kd2mcu.quant import reference` imports kd2mcu.quant.reference
                    sub = f"{node.module}.{alias.name}"
                    is_module = (PACKAGE.parent / (sub.replace(".", "/") + ".py")).is_file()
                    found.add(sub if is_module else node.module)
    return found


def all_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_belongs_to_a_stage():
    top_level = sorted(module_name(p) for p in PACKAGE.glob("*.py"))
    assert top_level == sorted(COMMON_MODULES | {"kd2mcu.cli", "kd2mcu.__main__"})
    for p in all_modules():
        stage_of(module_name(p))


def violations(modules: list[tuple[str, Path]]) -> list[str]:
    """Imports from a stage to one it may not import, for (module name, file) pairs."""
    wrong = []
    for name, path in modules:
        here = stage_of(name)
        for target in imported_modules(path):
            there = stage_of(target)
            if there not in (COMMON, here) and there not in MAY_IMPORT[here]:
                wrong.append(f"{name} ({here}) imports {target} ({there})")
    return wrong


def test_imports_run_only_to_lower_stages():
    wrong = violations([(module_name(p), p) for p in all_modules()])
    assert not wrong, "\n".join(wrong)


def test_the_rule_catches_upward_imports(tmp_path):
    """The checker itself: an integer-side module importing training (even inside a function) or a
    target importing a command is reported; importing a lower stage is not."""
    f = tmp_path / "m.py"
    f.write_text("from kd2mcu.quant import reference\n\ndef f():\n    from kd2mcu.train.student import TinyLSTM\n")
    assert violations([("kd2mcu.quant.fake", f)]) == [
        "kd2mcu.quant.fake (quant) imports kd2mcu.train.student (train)"]
    f.write_text("import kd2mcu.commands.sim\n")
    assert violations([("kd2mcu.targets.fake", f)]) == [
        "kd2mcu.targets.fake (targets) imports kd2mcu.commands.sim (commands)"]
    assert violations([("kd2mcu.cli", f)]) == []


@pytest.mark.parametrize("module", [
    "kd2mcu.quant.intmodel", "kd2mcu.quant.reference", "kd2mcu.quant.ptq", "kd2mcu.quant.onnx_import",
    "kd2mcu.codegen.render", "kd2mcu.codegen.buildfolder", "kd2mcu.targets.hostsim", "kd2mcu.targets.firmware",
    "kd2mcu.targets.qemu", "kd2mcu.targets.footprint", "kd2mcu.commands.sim", "kd2mcu.commands.emulate",
    "kd2mcu.cli",
])
def test_integer_side_imports_no_torch(module):
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"{module} loads torch: {proc.stdout[:200]}"
