"""The runtime is what goes onto an edge device: it must import without torch or torchvision."""

import pkgutil
import subprocess
import sys

import edgedet.runtime
from tests.conftest import NO_TORCH_PRELUDE, REPO, assert_user_error, run_cli


def test_every_runtime_module_imports_without_torch():
    modules = [m.name for m in pkgutil.walk_packages(edgedet.runtime.__path__, "edgedet.runtime.")]
    assert modules, "edgedet.runtime has no modules"
    code = NO_TORCH_PRELUDE + f"""
import importlib
for name in ['edgedet.runtime'] + {modules!r}:
    importlib.import_module(name)
try:
    import torch
except ImportError:
    pass
else:
    raise SystemExit('torch import was not blocked')
assert 'torch' not in sys.modules
print('ok')
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_cli_starts_without_torch_and_torch_commands_say_what_to_install():
    result = run_cli("--help", no_torch=True)
    assert result.returncode == 0, result.stderr
    assert "models" in result.stdout
    assert_user_error(run_cli("models", no_torch=True), "needs PyTorch", "edgedet[full]")
