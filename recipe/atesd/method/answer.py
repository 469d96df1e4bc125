r"""The final answer of a text: the content of its last ``\boxed{...}`` (docs/method.md §1, §3).

The one parser behind the teacher's answer statement (``recipe/atesd/method/prompts.py``), the data
preparation (``recipe/atesd/data/prepare_train.py``) and both rewards (``recipe/atesd/rewards/math_grader.py``,
``recipe/atesd/rewards/toy_grader.py``). Stdlib only, so the rewards that verl loads by path stay light.

Rules of :func:`last_box`:

- a box is one of ``commands`` (``\boxed``, ``\fbox``) not followed by a letter (``\fboxsep`` is no box);
  only the LAST box counts, even when it holds no answer;
- ``\boxed{...}``: the content between the matched braces (nested braces kept), stripped; a box that never
  closes (truncated output) or holds only whitespace is no answer;
- ``\boxed 5`` (``bare``): the run of characters after the spaces up to whitespace, ``$``, ``{`` or ``}``,
  without trailing ``.``, ``,``, ``;``;
- ``max_chars`` / ``max_depth`` (the math reward's cheap caps): content longer than ``max_chars`` or braces
  nested deeper than ``max_depth`` are ``oversize``; then at most ``max_chars + 64`` characters after the
  box are read: the text before the last box costs one ``str.rfind`` per command, no Python loop.
"""

from __future__ import annotations

import re
import string
from typing import NamedTuple

BOX_COMMANDS = ("boxed", "fbox")
_BARE_RE = re.compile(r" +([^\s${}]+)")


class BoxedAnswer(NamedTuple):
    """``answer``: the last box's content (None: no answer); ``status``: ``ok`` | ``no_answer`` | ``oversize``."""

    answer: str | None
    status: str


def _last_command(text: str, commands: tuple[str, ...]) -> tuple[int, int]:
    """(start, end) of the last ``\\command`` of ``commands`` not followed by an ASCII letter; (-1, -1) if none."""
    best = (-1, -1)
    for name in commands:
        token = "\\" + name
        end = len(text)
        while (pos := text.rfind(token, 0, end)) > best[0]:
            after = pos + len(token)
            if after == len(text) or text[after] not in string.ascii_letters:
                best = (pos, after)
                break
            end = pos
    return best


def last_box(
    text: str,
    *,
    commands: tuple[str, ...] = BOX_COMMANDS,
    bare: bool = True,
    max_chars: int | None = None,
    max_depth: int | None = None,
) -> BoxedAnswer:
    r"""The content of the last box of ``text`` by the rules of the module docstring.

    ``commands``: the box commands (the toy world's reward takes ``("boxed",)``); ``bare``: whether
    ``\boxed 5`` (no braces) is an answer (the toy world's reward: no); ``max_chars``, ``max_depth``: None =
    no cap (the math reward sets both). A non-string ``text`` is a ValueError naming it.
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    start, end = _last_command(text, commands)
    if start < 0:
        return BoxedAnswer(None, "no_answer")
    rest = text[end:] if max_chars is None else text[end : end + max_chars + 64]
    if not rest.lstrip().startswith("{"):
        found = _BARE_RE.match(rest) if bare else None
        answer = found.group(1).rstrip(".,;") if found else ""
        return _checked(answer, max_chars)
    rest = rest.lstrip()
    depth = 0
    for pos, char in enumerate(rest):
        if char == "{":
            depth += 1
            if max_depth is not None and depth > max_depth:
                return BoxedAnswer(None, "oversize")
        elif char == "}":
            depth -= 1
            if depth == 0:
                return _checked(rest[1:pos], max_chars)
        if max_chars is not None and pos > max_chars + 1:
            return BoxedAnswer(None, "oversize")
    return BoxedAnswer(None, "no_answer")  # the last box never closes (truncated output)


def _checked(content: str, max_chars: int | None) -> BoxedAnswer:
    if max_chars is not None and len(content) > max_chars:
        return BoxedAnswer(None, "oversize")
    content = content.strip()
    return BoxedAnswer(content, "ok") if content else BoxedAnswer(None, "no_answer")
