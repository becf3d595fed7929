"""papers.yaml against the two seed documents, each read here by its own small parser.

* the paper list (Markdown: ``# Section`` headings, entries ``  1. **Title.** *Authors.*``, empty
  ``** **`` placeholders, one entry wrapped onto a second line, Dyvedeep listed twice);
* the annotated survey (references ``- [N] Authors. Title. Venue...`` and a table of their rows).

Every paper of either document is in papers.yaml exactly once, the union is 191 papers, and the
annotated survey's references [1]-[100] each carry their table row. The seeds live in
``<repo>/../shared/seeds`` (or ``$ATLAS_SHARED_DIR/seeds``); without them these tests are skipped.
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pytest

import atlas
from atlas.catalogue import Catalogue, Paper, load_catalogue

LIST_SEED = "000_7afa87879276aa47.txt"
ANNOTATED_SEED = "004_b6441e30a19ff480.txt"
EXPECTED_UNION = 191

#: Papers the seeds name by another title than the published one papers.yaml records: a typo in
#: the list, or a preprint title the paper dropped when it was published (seed title -> published).
TITLE_VARIANTS: dict[str, str] = {
    "Deep convolutional neural networks for image classiffication: A comprehensive review": "Deep Convolutional Neural Networks for Image Classification: A Comprehensive Review",
    "Pruning convolutional neural networks for resource efficient transfer learning": "Pruning Convolutional Neural Networks for Resource Efficient Inference",
    "A simple yet effective method to prune dense layers of neural networks": "NoiseOut: A Simple Way to Prune Neural Networks",
    "Towards evolutional compression": "Towards Evolutionary Compression",
    "Net-trim: A layer-wise convex pruning of deep neural networks": "Net-Trim: Convex Pruning of Deep Neural Networks with Performance Guarantee",
    "Gated xnor networks: Deep neural networks with ternary weights and activations under a unified "
    "discretization framework": "GXNOR-Net: Training deep neural networks with ternary weights and activations without "
    "full-precision memory under a unified discretization framework",
    "Soft-to-hard vector quantization for end-to-end learned compression of images and neural networks": "Soft-to-Hard Vector Quantization for End-to-End Learning Compressible Representations",
    "Espresso: Efficient forward propagation for bcnns": "Espresso: Efficient Forward Propagation for Binary Deep Neural Networks",
    "Structured convolution matrices for energye efficient deep learning": "Structured Convolution Matrices for Energy-efficient Deep learning",
}


def seeds_dir() -> Path | None:
    shared = os.environ.get("ATLAS_SHARED_DIR")
    candidates = [Path(shared) / "seeds"] if shared else []
    candidates.append(atlas.ROOT.parent / "shared" / "seeds")
    for candidate in candidates:
        if (candidate / LIST_SEED).is_file() and (candidate / ANNOTATED_SEED).is_file():
            return candidate
    return None


SEEDS = seeds_dir()
PAPERS = atlas.ROOT / "papers.yaml"
pytestmark = [
    pytest.mark.skipif(
        SEEDS is None, reason="seed documents not found: set ATLAS_SHARED_DIR or put shared/ beside the clone"
    ),
    pytest.mark.skipif(not PAPERS.exists(), reason="papers.yaml is not there yet"),
]


def norm(text: str) -> str:
    """Lower case, ASCII letters and digits only."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]", "", text.lower())


SPELLING_VARIANTS: dict[str, str] = {
    norm(seed): norm(published) for seed, published in TITLE_VARIANTS.items()
}
SEED_TITLE_OF: dict[str, str] = {published: seed for seed, published in SPELLING_VARIANTS.items()}


@dataclass(frozen=True)
class ListEntry:
    section: str
    title: str
    authors: str
    line: int


def parse_list(path: Path) -> list[ListEntry]:
    """Entries of the Markdown paper list, placeholders dropped, wrapped lines joined."""
    raw: list[list] = []  # [section, text, line]
    section = ""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.startswith("#"):
            section = line.lstrip("#").strip()
        elif re.match(r"^\s*\d+\.\s", line):
            raw.append([section, line.strip(), number])
        elif line.strip() and raw:
            raw[-1][1] += " " + line.strip()  # a wrapped entry
    entries = []
    for section, text, number in raw:
        match = re.match(r"^\d+\.\s+\*\*(.*?)\*\*\s*\*(.*?)\*", text)
        assert match, f"{path.name}:{number}: cannot read entry {text!r}"
        title = match.group(1).strip().rstrip(".").strip()
        if title:
            entries.append(ListEntry(section, title, match.group(2).strip(), number))
    return entries


def parse_references(path: Path) -> dict[int, str]:
    """``{N: reference text}`` of the annotated survey's ``- [N] ...`` lines."""
    refs: dict[int, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^- \[(\d+)\]\s+(.*\S)\s*$", line)
        if match:
            number = int(match.group(1))
            assert number not in refs, f"reference [{number}] twice"
            refs[number] = match.group(2)
    return refs


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue(PAPERS)


@pytest.fixture(scope="module")
def list_entries() -> list[ListEntry]:
    assert SEEDS is not None
    return parse_list(SEEDS / LIST_SEED)


@pytest.fixture(scope="module")
def references() -> dict[int, str]:
    assert SEEDS is not None
    return parse_references(SEEDS / ANNOTATED_SEED)


def unique_list_titles(entries: list[ListEntry]) -> dict[str, ListEntry]:
    titles: dict[str, ListEntry] = {}
    for entry in entries:
        titles.setdefault(norm(entry.title), entry)
    return titles


def reference_to_list_title(references: dict[int, str], titles: dict[str, ListEntry]) -> dict[int, str]:
    """For each reference, the list title it contains (the longest, so "spatially-sparse ..." wins
    over "sparse ..."), when the list has it."""
    found = {}
    for number, text in references.items():
        candidates = [t for t in titles if t in norm(text)]
        if candidates:
            found[number] = max(candidates, key=len)
    return found


def test_seed_parsers_read_the_documents(list_entries: list[ListEntry], references: dict[int, str]) -> None:
    assert len(list_entries) == 188  # 188 entries, Dyvedeep twice
    titles = unique_list_titles(list_entries)
    assert len(titles) == 187
    dyvedeep = [e for e in list_entries if e.title.lower().startswith("dyvedeep")]
    assert [e.section for e in dyvedeep] == ["Network pruning", "Dynamic computation"]
    wrapped = next(
        e for e in list_entries if e.title.startswith("Binarized convolutional neural networks with sep")
    )
    assert wrapped.authors.endswith("Rajesh K. Gupta.")
    assert sorted(references) == list(range(1, 101))
    matched = reference_to_list_title(references, titles)
    assert len(set(matched.values())) == len(matched), "two references matched one list title"
    assert sorted(set(references) - set(matched)) == [24, 98, 99, 100]
    assert len(titles) + len(references) - len(matched) == EXPECTED_UNION


def find(catalogue: Catalogue, title: str) -> list[Paper]:
    wanted = SPELLING_VARIANTS.get(norm(title), norm(title))
    return [p for p in catalogue if norm(p.title) == wanted]


def test_every_list_paper_is_in_the_catalogue_once(
    catalogue: Catalogue, list_entries: list[ListEntry]
) -> None:
    missing, doubled, unlisted = [], [], []
    for entry in unique_list_titles(list_entries).values():
        hits = find(catalogue, entry.title)
        if not hits:
            missing.append(f"line {entry.line}: {entry.title}")
        elif len(hits) > 1:
            doubled.append(f"{entry.title}: {[p.key for p in hits]}")
        elif "list" not in hits[0].listed_in:
            unlisted.append(hits[0].key)
    assert not missing, "list papers missing from papers.yaml:\n" + "\n".join(missing)
    assert not doubled, "list papers in papers.yaml more than once:\n" + "\n".join(doubled)
    assert not unlisted, f"papers of the list without listed_in: list: {unlisted}"


def test_every_reference_is_in_the_catalogue_once(
    catalogue: Catalogue, list_entries: list[ListEntry], references: dict[int, str]
) -> None:
    by_ref: dict[int, list[Paper]] = {}
    for paper in catalogue:
        if paper.survey is not None:
            by_ref.setdefault(paper.survey.ref, []).append(paper)
    assert sorted(by_ref) == list(range(1, 101))
    assert all(len(papers) == 1 for papers in by_ref.values())
    wrong = []
    for number, text in references.items():
        paper = by_ref[number][0]
        title = SEED_TITLE_OF.get(norm(paper.title), norm(paper.title))
        if title not in norm(text):
            wrong.append(f"[{number}] {paper.key}: {paper.title!r} not in {text[:90]!r}")
        if "annotated" not in paper.listed_in:
            wrong.append(f"[{number}] {paper.key} lacks listed_in: annotated")
    # a paper in both documents is one paper: the list title found in the reference is that paper
    titles = unique_list_titles(list_entries)
    for number, title in reference_to_list_title(references, titles).items():
        hits = find(catalogue, titles[title].title)
        if hits and hits[0].key != by_ref[number][0].key:
            wrong.append(
                f"[{number}] is {by_ref[number][0].key} but the list's {titles[title].title!r} is {hits[0].key}"
            )
    assert not wrong, "\n".join(wrong)


def test_union_is_191(catalogue: Catalogue, list_entries: list[ListEntry]) -> None:
    from_list = {find(catalogue, e.title)[0].key for e in list_entries if find(catalogue, e.title)}
    from_refs = {p.key for p in catalogue if p.survey is not None}
    assert len(from_list | from_refs) == EXPECTED_UNION
    assert len(catalogue) == EXPECTED_UNION
    assert {p.key for p in catalogue} == from_list | from_refs


def test_survey_rows_are_complete(catalogue: Catalogue) -> None:
    rows = {p.survey.ref: (p.key, p.survey) for p in catalogue if p.survey is not None}
    assert sorted(rows) == list(range(1, 101))
    for ref, (key, row) in rows.items():
        assert row.klass, f"[{ref}] {key}: no class"
        assert row.conference.strip(), f"[{ref}] {key}: no conference"
        assert row.cite is None or row.cite >= 0, f"[{ref}] {key}: cite {row.cite!r}"
        for name in ("detailed", "superiority", "weakness"):
            assert isinstance(getattr(row, name), str), f"[{ref}] {key}: {name} missing"
    # the table's classes run in blocks: Transfer [1]-[7], then Pruning from [8]
    assert {rows[n][1].klass for n in range(1, 8)} == {"Transfer"}
    assert rows[8][1].klass == "Pruning" and rows[8][1].cite == 2202
    assert rows[11][1].conference == "NIPS2015" and rows[11][1].detailed == "prune connect"
