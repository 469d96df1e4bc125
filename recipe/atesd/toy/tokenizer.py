r"""Word-level Hugging Face tokenizer for the toy world (``recipe/atesd/toy/task.py``), Qwen3-shaped.

``python -m recipe.atesd.toy.tokenizer --out artifacts/toy-tokenizer``

Vocabulary (ids in this order, 111 tokens)::

    <|endoftext|> (pad)  <|im_start|>  <|im_end|> (eos)  <unk>     special tokens, as in Qwen3 (+ unk)
    <think>  </think>                                             added, not special (as in Qwen3)
    system user assistant  add mod ref end \boxed                 whole words: one token each
    every printable ASCII char (space .. ~), '\n', '\t'           single chars: digits, ' ', '{', '+', ...

Pre-tokenisation splits text into pieces: a listed word not glued to other letters, else one character.
The decoder concatenates pieces, so ``decode(encode(text)) == text`` for any printable-ASCII text (the
world's texts included); other characters encode to ``<unk>``. No BOS is added.

Chat template, Qwen3's shape: each message ``<|im_start|>{role}\n{content}<|im_end|>\n`` (roles system,
user, assistant; content verbatim); the generation prompt is ``<|im_start|>assistant\n``, followed by
``<think>\n\n</think>\n\n`` when ``enable_thinking`` is false (as Qwen3), by nothing otherwise.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from recipe.atesd.toy.task import WORDS

PAD, IM_START, IM_END, UNK = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"
THINK, END_THINK = "<think>", "</think>"
SPECIAL_TOKENS = (PAD, IM_START, IM_END, UNK)
THINK_TOKENS = (THINK, END_THINK)
ROLES = ("system", "user", "assistant")
CHARS = tuple(chr(c) for c in range(0x20, 0x7F)) + ("\n", "\t")
MODEL_MAX_LENGTH = 4096

CHAT_TEMPLATE = (
    "{%- for message in messages %}\n"
    "    {%- if message.role not in ['system', 'user', 'assistant'] %}\n"
    "        {{- raise_exception('toy chat template: unknown role ' + message.role) }}\n"
    "    {%- endif %}\n"
    "    {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "    {%- if enable_thinking is defined and enable_thinking is false %}\n"
    "        {{- '<think>\\n\\n</think>\\n\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
)


def vocabulary() -> list[str]:
    """All pieces, in id order: special, think, whole words (roles + ``task.WORDS``), single characters."""
    pieces = [*SPECIAL_TOKENS, *THINK_TOKENS, *ROLES, *WORDS, *CHARS]
    if len(set(pieces)) != len(pieces):
        raise ValueError("toy vocabulary has a repeated piece")
    return pieces


def split_pattern() -> str:
    """Pre-tokeniser regex: a whole word (not glued to letters), longest first, else any one character."""
    words = "|".join(re.escape(w) for w in sorted([*ROLES, *WORDS], key=len, reverse=True))
    return rf"(?<![A-Za-z])(?:{words})(?![A-Za-z])|[\s\S]"


def make_tokenizer():
    """The toy tokenizer as a ``transformers.PreTrainedTokenizerFast`` (in memory)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {piece: i for i, piece in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(split_pattern()), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        eos_token=IM_END,
        unk_token=UNK,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=MODEL_MAX_LENGTH,
    )


def build_tokenizer(out_dir: str | Path) -> Path:
    """Save the toy tokenizer to ``out_dir`` (``save_pretrained``); ``AutoTokenizer.from_pretrained`` loads it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    make_tokenizer().save_pretrained(str(out))
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory to write the tokenizer files to")
    args = parser.parse_args(argv)
    out = build_tokenizer(args.out)
    summary = {
        "out": str(out),
        "vocab_size": len(vocabulary()),
        "files": sorted(p.name for p in out.iterdir()),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
