"""Structure-aware chunking: sections by heading, packed by tokens, with overlap.

A document is cut into sections at its Markdown headings (HTML documents arrive with their
headings already turned into Markdown by corpus.read_document). Each section's paragraphs are
split into units (sentences, or lines for lists and tables), and units are packed greedily into
chunks of at most `chunk_tokens` embedder tokens. A chunk never crosses a heading, so its heading
trail ("Returns > Refunds") describes all of its text; consecutive chunks of one section share
their last whole sentences (up to `overlap_tokens`) so a fact cut at a boundary stays whole in one.
"""

from __future__ import annotations

import re
from pathlib import Path
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from markdown_it import MarkdownIt

from assistant.config import ChunkSettings
from assistant.corpus.corpus import Document
from assistant.corpus.ingest import page_at
from assistant.text import quick_sentences

# Headings and code fences come from a CommonMark parser (see _markdown_blocks), not a regex: a
# heading regex with lazy and greedy runs side by side took 101 s on `# a`, 4,000 spaces and `b`.
# Block rules only: a heading's text is its inline token's raw content, so inline parsing is off.
_MARKDOWN = MarkdownIt("zero").enable(["heading", "lheading", "fence"]).disable(["inline", "text_join"])
# A heading longer than this is cut (with "…") in the trail every chunk of its section repeats;
# the bundled corpora's longest heading is 112 characters, their longest trail 138.
MAX_HEADING_CHARS = 160
PARSE_WINDOW = 2000  # lines parsed at once (see _markdown_blocks): bounds the parser's memory
MAX_TRAIL_CHARS = 400
FENCE = re.compile(r"^\s*(```|~~~)")
LIST_OR_TABLE = re.compile(r"^\s*([-*+]|\d+[.)]|\|)\s")

CountTokens = Callable[[list[str]], list[int]]
# Hard cap on a chunk's characters per token of chunk_tokens, whatever the script: text without
# spaces (CJK, a base64 blob, a 50 MB line) is cut by characters, and no unit is ever tokenized
# whole when it is longer than this (tokenizing one 50 MB string takes minutes and gigabytes).
MAX_CHARS_PER_TOKEN = 8


def max_chars(chunk_tokens: int) -> int:
    return chunk_tokens * MAX_CHARS_PER_TOKEN


@dataclass
class Chunk:
    id: int
    path: str  # document path relative to the corpus, e.g. "docs/returns.md"
    heading: str  # heading trail, the document title first: "Returns > Refunds"
    text: str
    page: int | None = None  # PDFs: the page the chunk's text is on (chunks never cross pages)

    def embedding_text(self) -> str:
        # The heading trail names what the text is about ("Refunds" of "Returns"): embedding it
        # with the text lets short passages match questions that use the section's vocabulary.
        return f"{self.heading}\n{self.text}" if self.heading else self.text


@dataclass
class _Unit:
    text: str
    tokens: int
    block: int  # paragraph index inside the section: units of one block join with a space/newline
    sep: str  # separator from the previous unit of the same block


def sections(doc: Document) -> list[tuple[str, list[str]]]:
    """(heading trail, paragraphs) for each section of a document, in order; empty sections dropped."""
    return [(heading, paragraphs) for heading, paragraphs, _ in page_sections(doc)]


def _markdown_blocks(lines: list[str]) -> tuple[dict[int, tuple[int, int, str]], set[int]]:
    """Headings and fenced code of a document, found by a CommonMark parser (markdown-it-py) over
    its lines: {first line: (level, last line + 1, heading text)} and the set of lines inside fenced
    code. Only the heading and fence rules are on (no inline markup, lists or HTML), which keeps the
    parse linear in the document's size, whatever its lines hold.

    The parser holds a few hundred bytes per block, so a document is parsed in windows of
    PARSE_WINDOW lines: each window ends just before its last top-level block (which may go on in
    the next window: a paragraph, a fence not closed yet, a setext underline to come), and the next
    window starts there, in the parser's initial state (no container blocks are enabled). A block
    longer than the window doubles it, so the work stays linear."""
    headings: dict[int, tuple[int, int, str]] = {}
    fenced: set[int] = set()
    start, size = 0, PARSE_WINDOW
    while start < len(lines):
        end = min(len(lines), start + size)
        tokens = _MARKDOWN.parse("\n".join(lines[start:end]))
        blocks = [i for i, t in enumerate(tokens) if t.level == 0 and t.nesting >= 0 and t.map]
        keep = len(tokens)  # the tokens before the last block are final, unless the document ends here
        if end < len(lines):
            if len(blocks) < 2:  # one block fills the window: widen it and parse again
                size *= 2
                continue
            keep = blocks[-1]
        for i, tok in enumerate(tokens[:keep]):
            if tok.type == "heading_open":
                name = " ".join(tokens[i + 1].content.split())  # a setext heading may span lines
                if name:  # an empty heading ("#") stays text, as it reads
                    headings[start + tok.map[0]] = (int(tok.tag[1]), start + tok.map[1], name)
            elif tok.type == "fence":
                fenced.update(range(start + tok.map[0], start + tok.map[1]))
        start = start + tokens[keep].map[0] if keep < len(tokens) else end
        size = PARSE_WINDOW
    return headings, fenced


def _short(name: str, limit: int) -> str:
    """`name` cut to at most `limit` characters, at a space when there is one in its second half."""
    if len(name) <= limit:
        return name
    cut = name.rfind(" ", limit // 2, limit)
    return name[:cut if cut > 0 else limit - 1].rstrip() + "…"


def heading_trail(names: list[str]) -> str:
    """"Title > Section > Sub", each name capped at MAX_HEADING_CHARS and the trail at
    MAX_TRAIL_CHARS (the middle names give way): every chunk repeats its trail, so an unbounded
    heading would be copied into every passage of its section and every prompt that quotes one."""
    names = [_short(n, MAX_HEADING_CHARS) for n in names]
    trail = " > ".join(names)
    if len(trail) > MAX_TRAIL_CHARS and len(names) > 2:
        trail = " > ".join([names[0], "…", names[-1]])
    return _short(trail, MAX_TRAIL_CHARS)


def page_sections(doc: Document) -> list[tuple[str, list[str], int | None]]:
    """(heading trail, paragraphs, page) for each section; a page break of a PDF also ends a section."""
    # Sections without an H1 above them are led by a title made from the file name.
    title = Path(doc.path).stem.replace("-", " ").replace("_", " ").title()
    trail: list[tuple[int, str]] = []
    out: list[tuple[str, list[str], int | None]] = []
    blocks: list[str] = []
    lines: list[str] = []
    page = page_at(doc.pages, 0)
    text_lines = doc.text.splitlines()
    headings, fenced = _markdown_blocks(text_lines)

    def heading_text() -> str:
        names = [t for _, t in trail]
        if not trail or trail[0][0] != 1:  # no H1 above: the document title leads the trail
            names = [title] + names
        return heading_trail(names)

    def end_block() -> None:
        if lines:
            blocks.append("\n".join(lines).strip())
            lines.clear()

    def end_section() -> None:
        end_block()
        if blocks:
            out.append((heading_text(), [b for b in blocks if b], page))
            blocks.clear()

    skip_to = 0  # the lines of a heading (two for a setext one) are not text
    for n, line in enumerate(text_lines):
        if doc.pages and page_at(doc.pages, n) != page:
            end_section()
            page = page_at(doc.pages, n)
        if n < skip_to:
            continue
        if n in headings:
            end_section()
            level, skip_to, name = headings[n]
            trail = [(lv, t) for lv, t in trail if lv < level] + [(level, name)]
        elif not line.strip() and n not in fenced:
            end_block()
        else:
            lines.append(line.rstrip())
    end_section()
    return out


def _split_block(block: str) -> tuple[list[str], str]:
    """A paragraph's units and their separator: lines for lists/tables/code, else sentences."""
    lines = block.splitlines()
    if len(lines) > 1 and (any(LIST_OR_TABLE.match(l) for l in lines) or FENCE.match(lines[0])):
        return [l for l in lines if l.strip()], "\n"
    text = " ".join(l.strip() for l in lines)
    return quick_sentences(text), " "


def _split_long(text: str, limit: int, count: CountTokens) -> list[tuple[str, str]]:
    """Cut a unit longer than `limit` tokens (or max_chars(limit) characters) in two at the space
    nearest its middle, or at the middle character when it has none (CJK, a blob), until every
    piece fits; returns (piece, separator before it). Packing joins the pieces back up."""
    out: list[tuple[str, str]] = []

    def cut(piece: str, sep: str) -> None:
        if len(piece) <= 1 or (len(piece) <= max_chars(limit) and count([piece])[0] <= limit):
            out.append((piece, sep))
            return
        mid = len(piece) // 2
        at = piece.rfind(" ", 0, mid + 1)
        after = piece.find(" ", mid)
        at = after if at <= 0 or (0 < after and after - mid < mid - at) else at
        if at > 0:
            cut(piece[:at], sep)
            cut(piece[at:].lstrip(" "), " ")
        else:
            cut(piece[:mid], sep)
            cut(piece[mid:], "")

    cut(text, " ")
    return out


def _precut(text: str, cap: int) -> list[tuple[str, bool]]:
    """Pieces of at most `cap` characters, cut at the last space of each window when there is one;
    with whether a space separated the piece from the one before."""
    out, start, spaced = [], 0, False
    while len(text) - start > cap:  # by position: slicing the rest off each time is quadratic
        cut = text.rfind(" ", start + cap // 2, start + cap)
        cut = cut if cut > start else start + cap
        out.append((text[start:cut], spaced))
        spaced = text[cut:cut + 1] == " "
        start = cut
        while start < len(text) and text[start] == " ":
            start += 1
    return out + [(text[start:], spaced)] if start < len(text) else out


def _units(paragraphs: list[str], size: int, count: CountTokens) -> list[_Unit]:
    raw: list[tuple[str, int, str]] = []
    cap = max_chars(size)
    for b, block in enumerate(paragraphs):
        texts, sep = _split_block(block)
        for t in texts:  # never tokenize a huge unit whole; windows of ~size tokens at spaces
            raw += [(piece, b, sep if i == 0 else " " if piece_sep else "")
                    for i, (piece, piece_sep) in enumerate(_precut(t, size * 4))]
    sizes = count([t for t, _, _ in raw]) if raw else []
    staged: list[tuple[str, int, str, int | None]] = []  # (text, block, separator, tokens if known)
    for (text, b, sep), n in zip(raw, sizes):
        if n <= size and len(text) <= cap:
            staged.append((text, b, sep, n))
        else:
            pieces = _split_long(text, size, count)
            staged += [(p, b, psep if i else sep, None) for i, (p, psep) in enumerate(pieces)]
    todo = [t for t, _, _, n in staged if n is None]
    counted = iter(count(todo) if todo else [])  # again one batch
    return [_Unit(t, n if n is not None else next(counted), b, sep) for t, b, sep, n in staged]


def _join(units: list[_Unit]) -> str:
    parts = [units[0].text]
    for prev, u in zip(units, units[1:]):
        parts.append((u.sep if u.block == prev.block else "\n\n") + u.text)
    return "".join(parts)


def pack(units: list[_Unit], size: int, overlap: int) -> list[list[_Unit]]:
    """Greedy packing into chunks of <= size tokens (and <= max_chars(size) characters); each new
    chunk repeats the previous chunk's trailing units worth <= overlap tokens (never the whole
    previous chunk)."""
    chunks: list[list[_Unit]] = []
    cur: list[_Unit] = []
    n = 0
    cap = max_chars(size)
    for u in units:
        if cur and (n + u.tokens > size or sum(len(v.text) + 2 for v in cur) + len(u.text) > cap):
            chunks.append(cur)
            tail: list[_Unit] = []
            t = 0
            for v in reversed(cur[1:]):
                if (t + v.tokens > overlap or t + v.tokens + u.tokens > size
                        or sum(len(x.text) + 2 for x in tail) + len(v.text) + len(u.text) > cap):
                    break
                tail.insert(0, v)
                t += v.tokens
            cur, n = tail, t
        cur.append(u)
        n += u.tokens
    if cur:
        chunks.append(cur)
    return chunks


def chunk_documents(documents: Iterable[Document], settings: ChunkSettings, count: CountTokens) -> list[Chunk]:
    """Every chunk of every document, ids numbered from 0 in document order."""
    chunks: list[Chunk] = []
    for doc in documents:
        for heading, paragraphs, page in page_sections(doc):
            units = _units(paragraphs, settings.chunk_tokens, count)
            for group in pack(units, settings.chunk_tokens, settings.overlap_tokens):
                chunks.append(Chunk(len(chunks), doc.path, heading, _join(group), page))
    return chunks


def token_counter(tokenizer) -> CountTokens:
    """Count tokens with a Hugging Face tokenizer (no special tokens), batched."""
    def count(texts: list[str]) -> list[int]:
        if not texts:
            return []
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    return count


def word_counter(texts: list[str]) -> list[int]:
    """A tokenizer-free counter (whitespace words): deterministic, for tests and quick looks."""
    return [len(t.split()) for t in texts]
