"""The machine's pip index settings as uv environment variables, for ``make setup`` (standard library only).

``make setup`` installs the pinned closure with uv (``uv pip install``: parallel downloads and unpacking, ~10 s
instead of pip's ~60 s here), but uv reads no ``pip.conf``. This prints one ``export`` line per setting that pip
would use on this machine — its config files and ``PIP_*`` variables, as ``pip config list`` reports them, an
environment variable over a file — so both tools install from the same places:

    find-links → UV_FIND_LINKS (comma-separated)    index-url → UV_DEFAULT_INDEX
    extra-index-url → UV_EXTRA_INDEX_URL            constraint → UV_CONSTRAINT      cert → SSL_CERT_FILE

plus ``UV_INDEX_STRATEGY=unsafe-best-match``: pip takes the best version over every index, uv by default only
the first index that has the package. Usage: ``eval "$(python launch/uv_env.py)"``.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

UV_NAMES = {
    "find-links": ("UV_FIND_LINKS", ","),
    "index-url": ("UV_DEFAULT_INDEX", " "),
    "extra-index-url": ("UV_EXTRA_INDEX_URL", " "),
    "constraint": ("UV_CONSTRAINT", " "),
    "cert": ("SSL_CERT_FILE", " "),
}
LINE = re.compile(r"^(?P<scope>[^.]*)\.(?P<key>[a-z-]+)='(?P<value>.*)'$")


def uv_settings(pip_config_list: str) -> dict[str, str]:
    """``pip config list`` output → uv's environment. Per key the ``:env:`` scope (a ``PIP_*`` variable) wins over
    a file (pip's own precedence); a key uv has no name for is left out."""
    chosen: dict[str, tuple[bool, str]] = {}
    for line in pip_config_list.splitlines():
        match = LINE.match(line.strip())
        if not match or match["key"] not in UV_NAMES:
            continue
        from_env = match["scope"] == ":env:"
        if match["key"] not in chosen or from_env:
            chosen[match["key"]] = (from_env, match["value"])
    out = {"UV_INDEX_STRATEGY": "unsafe-best-match"}
    for key, (_, value) in chosen.items():
        name, sep = UV_NAMES[key]
        out[name] = sep.join(value.split())
    return out


def main() -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    for name, value in uv_settings(listed).items():
        print(f"export {name}={shlex.quote(value)}")


if __name__ == "__main__":
    main()
