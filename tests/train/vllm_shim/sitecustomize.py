"""Test-only: lets vLLM's Llava module import on this CPU stack, which has no torchvision
(torchvision's PyPI wheel breaks the local CPU torch). On that import path the only
torchvision use is transformers' Pixtral image processor, which imports
``torchvision.transforms.v2.functional`` for type hints; that one module is loaded from
its own source with the import replaced. torchvision stays absent. GPU images install
torchvision and need none of this."""

import importlib.abc
import importlib.machinery
import importlib.util
import sys

MODULE = "transformers.models.pixtral.image_processing_pixtral"
IMPORT = "from torchvision.transforms.v2 import functional as tvF"


class _WithoutTorchvision(importlib.abc.SourceLoader):
    """Compiles the edited source every time (no path_stats: the cached bytecode of the
    unedited file is never used)."""

    def __init__(self, path: str):
        self.path = path

    def get_filename(self, fullname):
        return self.path

    def get_data(self, path):
        with open(path, "rb") as f:
            return f.read().replace(IMPORT.encode(), b"tvF = None")


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not spec.origin:
            return None
        return importlib.util.spec_from_file_location(fullname, spec.origin, loader=_WithoutTorchvision(spec.origin))


sys.meta_path.insert(0, _Finder())
