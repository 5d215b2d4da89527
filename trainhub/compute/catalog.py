"""The VM sizes a cluster can name: the guide's cloud sizes by their own names, plus local sizes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VmSize:
    name: str
    vcpus: int
    gpus: int
    memory_gb: float
    description: str

    @property
    def has_gpu(self) -> bool:
        return self.gpus > 0


SIZES: dict[str, VmSize] = {
    size.name: size
    for size in [
        VmSize("LOCAL_CPU", 0, 0, 0, "This machine's nodes as they are: every CPU, no GPU"),
        VmSize("LOCAL_1CPU", 1, 0, 2, "A small local node: 1 CPU, 2 GB"),
        VmSize("LOCAL_2CPU", 2, 0, 4, "A local node: 2 CPUs, 4 GB"),
        VmSize("STANDARD_D1_V2", 1, 0, 3.5, "General purpose, 1 vCPU"),
        VmSize("STANDARD_D2_V2", 2, 0, 7, "General purpose, 2 vCPUs"),
        VmSize("STANDARD_D3_V2", 4, 0, 14, "General purpose, 4 vCPUs"),
        VmSize("STANDARD_D4_V2", 8, 0, 28, "General purpose, 8 vCPUs"),
        VmSize("STANDARD_DS3_V2", 4, 0, 14, "General purpose with premium storage, 4 vCPUs"),
        VmSize("STANDARD_NC6", 6, 1, 56, "1 × NVIDIA K80"),
        VmSize("STANDARD_NC12", 12, 2, 112, "2 × NVIDIA K80"),
        VmSize("STANDARD_NC24", 24, 4, 224, "4 × NVIDIA K80"),
        VmSize("STANDARD_NC6S_V3", 6, 1, 112, "1 × NVIDIA V100"),
        VmSize("STANDARD_NC24S_V3", 24, 4, 448, "4 × NVIDIA V100"),
    ]
}

UNKNOWN_SIZE = "Unknown vm_size {name!r}. Choose one of: {choices}."


def get_size(name: str) -> VmSize | None:
    return SIZES.get(name.upper())


def size_names() -> list[str]:
    return list(SIZES)
