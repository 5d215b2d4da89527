"""The machine's pip configuration, turned into arguments for uv (which does not read it).

Standard library only: the Makefile runs this before the project is installed.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PipConfig:
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    constraints: tuple[str, ...] = ()
    cert: str | None = None
    raw: dict[str, str] = field(default_factory=dict)

    def uv_args(self) -> list[str]:
        args: list[str] = []
        if self.index_url:
            args += ["--index-url", self.index_url]
        for url in self.extra_index_urls:
            args += ["--extra-index-url", url]
        for link in self.find_links:
            args += ["--find-links", link]
        for constraint in self.constraints:
            args += ["--constraint", constraint]
        return args

    def uv_env(self) -> dict[str, str]:
        return {"SSL_CERT_FILE": self.cert} if self.cert else {}


def _parse(output: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        # "global.find-links", ":env:.find-links", "install.constraint": the option is after the dot.
        option = key.rsplit(".", 1)[-1].strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        # Environment variables win over files, as they do for pip itself.
        if key.startswith(":env:") or option not in values:
            values[option] = value
    return values


def read_pip_config(python: str = sys.executable) -> PipConfig:
    """What `pip config list` reports, for the interpreter given."""
    try:
        completed = subprocess.run(
            [python, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        output = completed.stdout
    except (OSError, subprocess.TimeoutExpired):
        output = ""
    values = _parse(output)

    def split(name: str) -> tuple[str, ...]:
        return tuple(values.get(name, "").split())

    return PipConfig(
        index_url=values.get("index-url") or None,
        extra_index_urls=split("extra-index-url"),
        find_links=split("find-links"),
        constraints=split("constraint"),
        cert=values.get("cert") or None,
        raw=values,
    )


def main() -> None:
    config = read_pip_config()
    if sys.argv[1:] == ["--env"]:
        print(" ".join(f"{k}={shlex.quote(v)}" for k, v in config.uv_env().items()))
    else:
        print(" ".join(shlex.quote(a) for a in config.uv_args()))


if __name__ == "__main__":
    main()
