"""torchao's harmless import notes are silenced narrowly, and a missing torchao says which extra
to install (issue 23: step 7 printed two "Failed to load .so" lines and a deprecation warning)."""
from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch

from sramsim.errors import InputError
from sramsim.inject import torch_quantized as TQ


def _record(name: str, msg: str) -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, None, None)


def test_filter_drops_only_the_two_harmless_notes():
    f = TQ.HarmlessTorchaoNotes()
    so = "Failed to load /x/torchao/_C_cutlass_90a.abi3.so: Could not load this library"
    assert f.filter(_record("torchao", so)) == torch.cuda.is_available()
    enum = ("<enum 'KernelPreference'> is an Enum subclass and is now natively supported by "
            "torch.compile as an opaque value type. Calling register_constant() on Enum "
            "subclasses is deprecated and will be an error in a future release.")
    assert not f.filter(_record("torch.utils._pytree", enum))
    assert f.filter(_record("torchao", "Failed to quantize layer conv1"))       # real warnings pass
    assert f.filter(_record("torch.utils._pytree", "some other pytree warning"))
    assert f.filter(_record("sramsim", so))
    assert any(isinstance(x, TQ.HarmlessTorchaoNotes) for x in logging.getLogger("torchao").filters)


def test_pt2e_imports_after_sramsim_print_nothing():
    pytest.importorskip("torchao")
    code = ("from sramsim import TorchQuantizedModel\n"
            "from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e\n"
            "from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import "
            "X86InductorQuantizer\n"
            "import logging; logging.getLogger('torchao').warning('a real torchao warning')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines() == ["a real torchao warning"]


def test_missing_torchao_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao", None)
    with pytest.raises(InputError, match=r"pip install 'sramsim\[pt2\]'"):
        TQ.torchao_module()
