"""BibTeX out (entry types, round trip) and in (read_bib, atlas import-bib)."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import bibtexparser
import pytest

import atlas
from atlas.bibtex import Person, entry_for, latex_unescape, protect_title, read_bib, split_names, to_bibtex
from atlas.catalogue import load_catalogue
from atlas.cli import main
from atlas.errors import CatalogueError

FIXTURES = Path(__file__).parent / "fixtures"
SMALL = FIXTURES / "papers_small.yaml"
REAL = atlas.ROOT / "papers.yaml"

GOOD_BIB = """\
% two new papers and one the catalogue has already
@inproceedings{zhou2016less,
  title     = {Less is More: Towards Compact {CNNs}},
  author    = {Zhou, Hao and Alvarez, Jose M. and Porikli, Fatih},
  booktitle = {European Conference on Computer Vision (ECCV)},
  pages     = {662--677},
  year      = {2016},
  organization = {Springer}
}

@article{lavin2015fast,
  title   = {Fast Algorithms for Convolutional Neural Networks},
  author  = {Andrew Lavin and Scott Gray},
  journal = {arXiv preprint arXiv:1509.09308},
  year    = {2015}
}

@article{han2015again,
  title   = {Learning Both Weights and Connections for Efficient Neural Networks},
  author  = {Han, Song and Pool, Jeff and Tran, John and Dally, William J.},
  journal = {Advances in Neural Information Processing Systems},
  year    = {2015}
}

@article{hanmicro,
  title   = {A Journal Paper by {Han}},
  author  = {Han, Song and Dally, William J.},
  journal = {IEEE Micro},
  year    = {2015},
  doi     = {https://doi.org/10.1109/MM.2015.12345}
}
"""


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def catalogue_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "papers.yaml"
    shutil.copy(SMALL, path)
    monkeypatch.setenv("ATLAS_PAPERS", str(path))
    return path


def test_entry_types() -> None:
    catalogue = load_catalogue(SMALL)
    conference = entry_for(catalogue.get("han2015"))
    assert conference.entry_type == "inproceedings"
    assert conference["booktitle"] == "Advances in Neural Information Processing Systems 28 (NIPS 2015)"
    assert "journal" not in conference
    journal = entry_for(catalogue.get("scardapane2017"))
    assert journal.entry_type == "article"
    assert journal["journal"] == "Neurocomputing"
    assert journal["doi"] == "10.1016/j.neucom.2017.02.029"
    preprint = entry_for(catalogue.get("hinton2015"))
    assert preprint.entry_type == "misc"
    assert preprint["eprint"] == "1503.02531"
    assert preprint["archivePrefix"] == "arXiv"
    assert "primaryClass" not in preprint  # unknown for a new-style id
    assert preprint["author"] == "Geoffrey Hinton and Oriol Vinyals and Jeff Dean"
    assert preprint["year"] == "2015"
    assert preprint["url"] == "https://arxiv.org/abs/1503.02531"


def test_title_protection() -> None:
    assert (
        protect_title("MobileNets: Efficient CNNs for Mobile Vision")
        == "{MobileNets}: Efficient {CNNs} for Mobile Vision"
    )
    assert protect_title("XNOR-Net & Bayesian Compression") == r"{XNOR-Net} \& {Bayesian} Compression"
    assert protect_title("A Survey of Model Compression") == "A Survey of Model Compression"
    assert latex_unescape(protect_title("XNOR-Net & CNNs: 50% in {one}")) == "XNOR-Net & CNNs: 50% in one"


def as_decoded(text: str) -> str:
    """What LaTeX markup decodes back to: the minus sign is written ``{\\ensuremath{-}}``, read as ``-``."""
    return " ".join(text.replace("\N{MINUS SIGN}", "-").split())


def round_trip(papers: list, text: str | None = None) -> None:
    text = to_bibtex(papers) if text is None else text
    assert text.isascii(), [line for line in text.splitlines() if not line.isascii()][:3]
    library = bibtexparser.parse_string(text)
    assert library.failed_blocks == []
    entries = library.entries
    assert [e.key for e in entries] == [p.key for p in papers]
    for entry, paper in zip(entries, papers, strict=True):
        assert latex_unescape(entry["title"]) == as_decoded(paper.title)
        assert entry.entry_type == entry_for(paper).entry_type
        assert [latex_unescape(a) for a in entry["author"].split(" and ")] == list(paper.authors)
        venue = entry.get("booktitle") or entry.get("journal") or entry.get("howpublished")
        if venue is not None:
            assert latex_unescape(venue.value) == as_decoded(paper.venue.name)
        assert int(entry["year"]) == paper.year


def test_round_trip_fixture() -> None:
    round_trip(load_catalogue(SMALL).papers)


@pytest.mark.skipif(not REAL.exists(), reason="papers.yaml is not there yet")
def test_round_trip_real_catalogue() -> None:
    papers = load_catalogue(REAL).papers
    round_trip(papers)
    types = {entry_for(p).entry_type for p in papers}
    assert {"inproceedings", "article", "misc"} <= types


def test_non_ascii_written_as_latex() -> None:
    assert protect_title("Müller’s “XNOR-Net” – weights +1, 0 and −1 — 50% é") == (
        'M{\\"u}ller{\\textquoteright}s {\\textquotedblleft}{XNOR-Net}{\\textquotedblright} {\\textendash} '
        "weights +1, 0 and {\\ensuremath{-}}1 {\\textemdash} 50\\% {\\'e}"
    )
    assert latex_unescape("M{\\\"u}ller {\\textendash} Souli{\\'e}") == "Müller – Soulié"
    assert latex_unescape("50% of a&b~c") == "50% of a&b c"  # bare % and & stay text
    assert protect_title("\N{CJK UNIFIED IDEOGRAPH-4E2D}").isascii()  # no LaTeX form: its code point


def test_cite_all_is_ascii_and_round_trips(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cite", "--all"]) == 0
    text = capsys.readouterr().out
    papers = load_catalogue(REAL).papers
    round_trip(papers, text)
    assert (
        "Fixed-point feedforward deep neural network design using weights +1, 0, and {\\ensuremath{-}}1"
        in text
    )


@pytest.mark.skipif(not (shutil.which("pdflatex") and shutil.which("bibtex")), reason="no pdflatex/bibtex")
def test_cite_all_compiles_with_pdflatex(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cite", "--all", "--out", str(tmp_path / "refs.bib")]) == 0
    keys = [p.key for p in load_catalogue(REAL).papers]
    (tmp_path / "doc.tex").write_text(
        "\\documentclass{article}\n\\begin{document}\n"
        f"\\cite{{{','.join(keys)}}}\n"
        "\\bibliographystyle{plain}\n\\bibliography{refs}\n\\end{document}\n"
    )
    latex = ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"]
    for command in (latex, ["bibtex", "doc"], latex, latex):
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        # bibtex exits 1 after a warning (a missing optional field), 2 and up on an error
        assert done.returncode <= (1 if command[0] == "bibtex" else 0), (command, done.stdout[-3000:])
    log = (tmp_path / "doc.log").read_text(errors="replace")
    assert not re.search(r"Citation .* undefined|Unicode character", log), log[-3000:]
    bbl = (tmp_path / "doc.bbl").read_text()
    assert all(f"\\bibitem{{{key}}}" in bbl for key in keys)
    assert (tmp_path / "doc.pdf").stat().st_size > 0


def test_read_bib_good(tmp_path: Path) -> None:
    path = tmp_path / "good.bib"
    path.write_text(GOOD_BIB)
    entries = read_bib(path)
    assert [e.key for e in entries] == ["zhou2016less", "lavin2015fast", "han2015again", "hanmicro"]


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (
            "@article{a,\n  title={x},\n  author={y},\n  year={2015}\n}\n\n@misc{b,\n  title = {x\n",
            7,
            "cannot parse the block starting here",
        ),
        ("@article{a,\n  title={x},\n  year={2015}\n}\n", 1, "entry 'a' has no author"),
        ("@article{a,\n  author={x},\n  title={T},\n  year={15th}\n}\n", 1, "'15th' is not a year"),
        (
            "@article{a, title={x}, author={y}, year=2015}\n@article{a, title={z}, author={y}, year=2016}\n",
            2,
            "Duplicate entry key 'a'",
        ),
        ("@article{a, title={x}, title={z}, author={y}, year=2015}\n", 1, "Duplicate field keys"),
        (
            "@article{a, title={x}, author={y}, year=2015}\n@artic le{b, title={z}}\n",
            2,
            "looks like an entry but does not parse",
        ),
        (
            "@article{a, title={x}, year=2015,\n  author={Han, Song and Pool, Jeff, Jr, X}}\n",
            1,
            "entry 'a', field 'author': cannot split the name 'Pool, Jeff, Jr, X': too many commas",
        ),
    ],
)
def test_read_bib_malformed(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = tmp_path / "bad.bib"
    path.write_text(text)
    with pytest.raises(CatalogueError) as info:
        read_bib(path)
    assert f"bad.bib:{line}: " in str(info.value)
    assert words in str(info.value)


def test_split_names_follows_bibtex() -> None:
    """Both BibTeX name forms give the same person; von particles belong to the surname; braces
    group; LaTeX accents are decoded after splitting."""
    maaten = Person(first="Laurens", von="van der", last="Maaten", jr="")
    assert split_names("van der Maaten, Laurens") == split_names("Laurens van der Maaten") == [maaten]
    assert maaten.surname == "van der Maaten" and maaten.full == "Laurens van der Maaten"
    zola = split_names(r"{\'E}mile Zola and Zola, {\'E}mile and Emile {\'{Z}}ola")
    assert [p.full for p in zola] == ["Émile Zola", "Émile Zola", "Emile Źola"]
    assert [p.surname for p in split_names(r"Ludwig van Beethoven and Yann {Le Cun} and {Google Brain}")] == [
        "van Beethoven", "Le Cun", "Google Brain"]
    smith = split_names("Smith, Jr., John and others")
    assert smith == [Person(first="John", von="", last="Smith", jr="Jr.")] and smith[0].full == "John Smith, Jr."
    assert split_names("Han, Song and\n   Pool, Jeff") == [Person("Song", "", "Han", ""), Person("Jeff", "", "Pool", "")]


def test_import_bib_name_forms_give_one_key(
    catalogue_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """"van der Maaten, Laurens" and "Laurens van der Maaten" are one surname: the second paper of
    the same year takes the suffix b; "{\\'E}mile Zola" is keyed by its ASCII surname."""
    bib = tmp_path / "names.bib"
    bib.write_text(
        "@article{m1, title={One}, author={van der Maaten, Laurens and Hinton, Geoffrey}, journal={J}, year={2008}}\n"
        "@article{m2, title={Two}, author={Laurens van der Maaten}, journal={J}, year={2008}}\n"
        "@article{z1, title={Three}, author={{\\'E}mile Zola and Ren{\\'e} Magritte}, journal={J}, year={2016}}\n"
        "@article{z2, title={Four}, author={{\\'{S}}lusarz, {\\'E}mile}, journal={J}, year={2016}}\n"
    )
    assert main(["import-bib", str(bib), "--category", "pruning"]) == 0
    assert "added 4 papers" in capsys.readouterr().out
    catalogue = load_catalogue(catalogue_copy)
    assert catalogue.keys()[-4:] == ["vandermaaten2008", "vandermaaten2008b", "zola2016", "slusarz2016"]
    assert catalogue.get("vandermaaten2008").authors == ("Laurens van der Maaten", "Geoffrey Hinton")
    assert catalogue.get("vandermaaten2008b").authors == ("Laurens van der Maaten",)
    assert catalogue.get("zola2016").authors == ("Émile Zola", "René Magritte")
    assert catalogue.get("slusarz2016").authors == ("Émile Ślusarz",)


def test_read_bib_empty_and_missing(tmp_path: Path) -> None:
    empty = tmp_path / "empty.bib"
    empty.write_text("\n  \n")
    with pytest.raises(CatalogueError, match="the file is empty"):
        read_bib(empty)
    comments = tmp_path / "comments.bib"
    comments.write_text("just words, no entries\n")
    with pytest.raises(CatalogueError, match="no BibTeX entries found"):
        read_bib(comments)
    with pytest.raises(CatalogueError, match="cannot read"):
        read_bib(tmp_path / "missing.bib")
    binary = tmp_path / "binary.bib"
    binary.write_bytes(b"@article{a,\n title={\xff\xfe}}\n")
    with pytest.raises(CatalogueError, match="binary.bib:2: not UTF-8"):
        read_bib(binary)


def test_import_bib_success(catalogue_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bib = tmp_path / "new.bib"
    bib.write_text(GOOD_BIB)
    before = catalogue_copy.read_text()
    assert main(["import-bib", str(bib), "--category", "pruning", "--category", "compact-design"]) == 0
    out = capsys.readouterr()
    assert "added 3 papers" in out.out
    assert "skipped 'han2015again'" in out.err and "already paper 'han2015'" in out.err
    after = catalogue_copy.read_text()
    assert after.startswith(before)  # appended: comments and layout kept
    catalogue = load_catalogue(catalogue_copy)
    assert catalogue.keys()[-3:] == ["zhou2016", "lavin2015", "han2015b"]
    zhou = catalogue.get("zhou2016")
    assert zhou.authors == ("Hao Zhou", "Jose M. Alvarez", "Fatih Porikli")
    assert zhou.title == "Less is More: Towards Compact CNNs"
    assert (zhou.venue.type, zhou.venue.short) == ("conference", "ECCV 2016")
    assert zhou.categories == ("pruning", "compact-design") and zhou.kind == "method"
    lavin = catalogue.get("lavin2015")
    assert (lavin.venue.type, lavin.arxiv) == ("preprint", "1509.09308")
    micro = catalogue.get("han2015b")
    assert (micro.venue.type, micro.venue.name, micro.doi) == (
        "journal",
        "IEEE Micro",
        "10.1109/MM.2015.12345",
    )
    assert not list(tmp_path.glob(".papers.yaml.*"))  # no temp file left
    # importing again adds nothing, and says why
    assert main(["import-bib", str(bib), "--category", "pruning"]) == 0
    assert "nothing to add" in capsys.readouterr().out
    # the next Han 2015 paper takes the next free suffix
    more = tmp_path / "more.bib"
    more.write_text("@article{x, title={Yet Another}, author={Han, Song}, journal={J}, year={2015}}\n")
    assert main(["import-bib", str(more), "--category", "pruning"]) == 0
    assert "han2015c" in load_catalogue(catalogue_copy)


def test_import_bib_matches_arxiv_id_and_doi(
    catalogue_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same work under another title (the arXiv version's, a typo) is recognised by its ids."""
    bib = tmp_path / "same.bib"
    bib.write_text(
        "@misc{hanarxiv, title={Learning both Weights and Connections for Efficient Neural Network},\n"
        "  author={Han, Song and Pool, Jeff}, year={2015}, eprint={1506.02626v3}, archivePrefix={arXiv}}\n"
        "@article{scard, title={Group Sparse Regularization for Deep Nets}, author={Scardapane, Simone},\n"
        "  journal={Neurocomputing}, year={2017}, doi={https://doi.org/10.1016/J.NEUCOM.2017.02.029}}\n"
        "@misc{twice1, title={One Preprint}, author={Doe, Jane}, year={2016}, eprint={1606.00001}}\n"
        "@misc{twice2, title={One Preprint, Retitled}, author={Doe, Jane}, year={2016}, eprint={1606.00001}}\n"
    )
    digest = sha(catalogue_copy)
    assert main(["import-bib", str(bib), "--category", "pruning", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert "skipped 'hanarxiv': arXiv id 1506.02626 is already paper 'han2015'" in err
    assert "skipped 'scard': DOI 10.1016/j.neucom.2017.02.029 is already paper 'scardapane2017'" in err
    assert "skipped 'twice2': arXiv id 1606.00001 is already paper 'doe2016'" in err
    assert "would add 1 papers" in out and "- key: doe2016\n" in out and "han2015b" not in out
    assert sha(catalogue_copy) == digest


def test_import_bib_dry_run_writes_nothing(
    catalogue_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bib = tmp_path / "new.bib"
    bib.write_text(GOOD_BIB)
    digest = sha(catalogue_copy)
    assert main(["import-bib", str(bib), "--category", "pruning", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would add 3 papers" in out and "- key: zhou2016" in out
    assert sha(catalogue_copy) == digest


@pytest.mark.parametrize(
    ("bib_text", "words"),
    [
        (
            "@article{a, title={Fine}, author={A B}, journal={J}, year={2015}}\n@misc{b, title = {broken\n",
            "cannot parse the block starting here",
        ),
        ("@article{a, title={No Year}, author={A B}, journal={J}}\n", "entry 'a' has no year"),
        (
            "@article{a, title={Old}, author={A B}, journal={J}, year={1850}}\n",
            "entry 'a' (would be paper 'b1850'), field 'year': 1850 is outside 1950..2030",
        ),
        ("@misc{a, title={Where}, author={A B}, year={2015}}\n", "cannot tell its venue"),
        (
            "@article{a, title={Bad DOI}, author={A B}, journal={J}, year={2015}, doi={11.5/x}}\n",
            "field 'doi': '11.5/x' is not a DOI",
        ),
        ("", "the file is empty"),
    ],
)
def test_import_bib_rejects_and_leaves_catalogue_unchanged(
    catalogue_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], bib_text: str, words: str
) -> None:
    bib = tmp_path / "bad.bib"
    bib.write_text(bib_text)
    digest = sha(catalogue_copy)
    assert main(["import-bib", str(bib), "--category", "pruning"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert words in err
    assert sha(catalogue_copy) == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.bib", "papers.yaml"]


def test_import_bib_needs_a_category(
    catalogue_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bib = tmp_path / "new.bib"
    bib.write_text(GOOD_BIB)
    with pytest.raises(SystemExit) as info:
        main(["import-bib", str(bib)])
    assert info.value.code == 2
    assert "--category" in capsys.readouterr().err
