"""Copied into a virtualenv whose torchvision is a CUDA build beside a CPU torch (see
builders.torchvision_without_compiled_ops), as `_trainhub_torchvision_cpu`, and imported by a .pth.

torchvision is meant to import without its compiled operators (torchvision.extension._has_ops()
is then False and torchvision.ops raise torchvision's own error), but its _meta_registrations
registers fake kernels for torchvision::nms and torchvision::qnms whether or not they exist, so
`import torchvision` itself fails. Declaring those two schemas (no kernel) just before torchvision
is first imported lets it import; its models, transforms and datasets are pure Python on torch.
Standard library only until torchvision is imported; nothing happens in a process that never does.
"""

from __future__ import annotations

import sys
import warnings

SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
WARNING = (
    "This environment's torchvision {torchvision} is a CUDA build and its torch {torch} is not: "
    "torchvision's models, transforms and datasets work; its compiled operators (torchvision.ops "
    "such as nms and roi_align, and torchvision.io's image decoding) are unavailable here."
)
# A Library deregisters its definitions when collected: kept for the life of the process.
_libraries: list = []


class _BeforeTorchvision:
    """A meta path finder that finds nothing: it declares the schemas as torchvision is first looked up."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torchvision":
            return None
        sys.meta_path.remove(self)
        # Imported only as torchvision is (see the module's docstring): every interpreter of the
        # environment loads this shim.
        import torch

        library = torch.library.Library("torchvision", "FRAGMENT")
        for schema in SCHEMAS:
            library.define(schema)
        _libraries.append(library)
        from importlib.metadata import version  # as torch, only once torchvision is imported

        warnings.warn(WARNING.format(torchvision=version("torchvision"), torch=torch.__version__), stacklevel=2)
        return None


sys.meta_path.insert(0, _BeforeTorchvision())
