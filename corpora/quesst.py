"""MediaEval query-by-example corpora as released: QUESST 2014 and SWS 2013 -> queries, documents, ground truth.

Both are searches of spoken queries (separate recordings, one per term) in a set of spoken documents, with
a dev and an eval query set searched in the same documents, scored with NIST's spoken term detection
files: a term list (``.tlist.xml``: ``<term termid="...">``), an experiment control file (``.ecf.xml``:
``<excerpt audio_filename="Audio/<document>.wav" ...>``, the documents searched) and an RTTM file listing
every occurrence of every term (``LEXEME <document> <channel> <tbeg> <dur> <termid> ...``).

QUESST 2014 (:func:`read_quesst14`), ``quesst14Database/``::

    Audio/<document>.wav                              documents (quesst14_00001 ...), 8 kHz
    dev_queries/<termid>.wav, eval_queries/<termid>.wav   one query per term (quesst14_dev_0001 ...)
    scoring/groundtruth_quesst14_<split>/             quesst14_<split>.rttm, the .ecf.xml, the .tlist.xml
    scoring/language_key_{utterances,dev,eval}.lst    ``<path> <language>`` per audio file

SWS 2013 (:func:`read_sws2013`), ``sws2013Database_dev_eval/``::

    Audio/<document>.wav, dev_queries/, eval_queries/ as above (sws2013_dev_001 ...); a term's extra
    examples (``<termid>_<nn>.wav``) are not read (counted in the report)
    scoring_atwv_sws2013/sws2013_<split>/             sws2013_<split>.rttm, sws2013.ecf.xml,
                                                      sws2013_<split>.tlist.xml (unpacked from
                                                      scoring_atwv_sws2013_full.tgz); or scoring_atwv_sws2013_<split>/

In a ground-truth folder the file of each kind is the one of the name above, else the only file with that
suffix (the ECF and term list names are taken from the release notes of the scorers, not checked against
a release). ``root`` is the database folder or the folder holding it.

What is read:

- the queries of a split: the term list's terms, each with its recording ``<split>_queries/<termid>.wav``;
- the documents: the excerpts of both ECFs (``Audio/<document>.wav``); each split searches its own ECF's;
- the ground truth, file level: a document is a target of a query when the split's RTTM has a ``LEXEME``
  line naming the query's term id in that document (times are read and checked, not used). RTTM lines of
  other types and ``;;`` comments are skipped; a ``LEXEME`` of a term the term list lacks (e.g.
  ``NO_KEYWORD``) is skipped and counted;
- QUESST 2014 only, with ``language`` (S3PRL's QbE keeps ``nnenglish``): only the queries and documents
  the language keys give that language (``""``: every language).

A query may have no target (the reader keeps it; a search leaves such queries out, as NIST's scorer does).
Audio is not decoded here (durations come from the headers); it is read at 16 kHz later
(:func:`corpora.audio.load_audio` resamples the 8 kHz recordings).

Errors (:class:`~corpora.manifest.ManifestError`) name the file and, where there is one, the line: a
missing folder or file, a malformed RTTM, ECF, term list or language key line, a term without its query
recording, a document without audio, an occurrence in a document the split's ECF does not list.
"""
from __future__ import annotations

import xml.parsers.expat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .audio import AudioError, audio_info
from .manifest import ManifestError, Record

QUESST14 = "quesst14"
SWS2013 = "sws2013"
SPLITS = ("dev", "eval")
QUESST14_FOLDER = "quesst14Database"
SWS2013_FOLDER = "sws2013Database_dev_eval"
QUESST14_LANGUAGES = ("albanian", "basque", "czech", "nnenglish", "romanian", "slovak")
"""The language keys of QUESST 2014 (``nnenglish``: non-native English)."""
RTTM_TYPES = frozenset({"SEGMENT", "NOSCORE", "NO_RT_METADATA", "LEXEME", "NON-LEX", "NON-SPEECH", "FILLER", "EDIT",
                        "IP", "CB", "A/P", "SU", "SPEAKER", "SPKR-INFO"})
"""Object types of NIST's RTTM format; a line of another type is an error (only LEXEME lines are read)."""
AUDIO_SUFFIX = ".wav"


@dataclass(frozen=True)
class SpokenQuery:
    """One query recording: ``record.id`` is the term id (the file stem), ``split`` ``dev`` or ``eval``."""

    record: Record
    split: str
    language: str = ""

    @property
    def id(self) -> str:
        return self.record.id


@dataclass(frozen=True)
class Occurrence:
    """One ``LEXEME`` line of an RTTM file."""

    document: str
    channel: str
    start: float
    duration: float
    term: str
    line: int


@dataclass
class SearchCorpus:
    """A query-by-example corpus as read.

    Attributes:
        name: ``quesst14`` or ``sws2013``.
        root: the database folder.
        language: the language kept (QUESST 2014), ``""``: all.
        queries: dev queries then eval queries, each sorted by id.
        documents: every document of either split, sorted by id.
        split_documents: split -> ids of the documents its ECF lists (and the language keeps).
        targets: query id -> ids of the documents its split's RTTM puts its term in (possibly none).
        report: counts of what was read and what was left out, and the files read.
    """

    name: str
    root: str
    language: str
    queries: list[SpokenQuery]
    documents: list[Record]
    split_documents: dict[str, frozenset[str]]
    targets: dict[str, frozenset[str]]
    report: dict = field(default_factory=dict)

    def split_queries(self, split: str) -> list[SpokenQuery]:
        return [q for q in self.queries if q.split == split]


# ---------------------------------------------------------------- the scoring files


def read_rttm(path: str | Path) -> list[Occurrence]:
    """The ``LEXEME`` lines of an RTTM file (``LEXEME <file> <channel> <tbeg> <dur> <termid> ...``).

    Blank lines, ``;;`` comments and lines of the other RTTM types are skipped. A ``LEXEME`` line with fewer
    than 6 fields, or a start or duration that is not a number >= 0, and a line of an unknown type, are
    errors naming the file and line. The file field may carry a folder and a suffix (``Audio/x.wav``: ``x``).
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: RTTM file not found")
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split()
            if not fields or fields[0].startswith(";;"):
                continue
            kind = fields[0].upper()
            if kind not in RTTM_TYPES:
                raise ManifestError(f"{path}:{lineno}: not an RTTM line (type {fields[0]!r}; expected "
                                    f"'LEXEME <file> <channel> <tbeg> <dur> <termid> ...' or another RTTM type)")
            if kind != "LEXEME":
                continue
            if len(fields) < 6:
                raise ManifestError(f"{path}:{lineno}: LEXEME line with {len(fields)} fields; expected "
                                    "'LEXEME <file> <channel> <tbeg> <dur> <termid> ...'")
            try:
                start, duration = float(fields[3]), float(fields[4])
            except ValueError:
                raise ManifestError(f"{path}:{lineno}: LEXEME start {fields[3]!r} and duration {fields[4]!r} must be "
                                    "numbers (seconds)") from None
            if not (start >= 0 and duration >= 0):
                raise ManifestError(f"{path}:{lineno}: LEXEME start {start} and duration {duration} must be >= 0")
            out.append(Occurrence(_stem(fields[1]), fields[2], start, duration, fields[5], lineno))
    return out


def read_ecf(path: str | Path) -> list[tuple[str, int]]:
    """(document id, line) of every ``<excerpt audio_filename=...>`` of an ECF file, in file order."""
    excerpts = []
    for tag, attributes, lineno in _xml_elements(path, "ECF"):
        if tag != "excerpt":
            continue
        if not attributes.get("audio_filename", "").strip():
            raise ManifestError(f"{path}:{lineno}: <excerpt> without an audio_filename")
        excerpts.append((_stem(attributes["audio_filename"]), lineno))
    if not excerpts:
        raise ManifestError(f"{path}: no <excerpt audio_filename=...> element: not an ECF file")
    return excerpts


def read_tlist(path: str | Path) -> list[tuple[str, int]]:
    """(term id, line) of every ``<term termid=...>`` of a term list, in file order (a repeated id is an error)."""
    terms, seen = [], {}
    for tag, attributes, lineno in _xml_elements(path, "term list"):
        if tag != "term":
            continue
        termid = attributes.get("termid", "").strip()
        if not termid:
            raise ManifestError(f"{path}:{lineno}: <term> without a termid")
        if termid in seen:
            raise ManifestError(f"{path}:{lineno}: term {termid!r} listed again (first at line {seen[termid]})")
        seen[termid] = lineno
        terms.append((termid, lineno))
    if not terms:
        raise ManifestError(f"{path}: no <term termid=...> element: not a term list")
    return terms


def read_language_key(path: str | Path) -> dict[str, tuple[str, int]]:
    """QUESST 2014's ``language_key_*.lst``: audio file stem -> (language, line) from ``<path> <language>`` lines."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: language key file not found (QUESST 2014 has it under scoring/; "
                            "set quesst14_language to '' to keep every language without it)")
    out = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise ManifestError(f"{path}:{lineno}: expected '<audio path> <language>', found {len(fields)} fields")
            out[_stem(fields[0])] = (fields[1], lineno)
    return out


def _xml_elements(path: str | Path, what: str) -> list[tuple[str, dict[str, str], int]]:
    """(tag, attributes, line) of every element of an XML file, in document order."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: {what} file not found")
    elements: list[tuple[str, dict[str, str], int]] = []
    parser = xml.parsers.expat.ParserCreate()
    parser.StartElementHandler = lambda tag, attributes: elements.append((tag, attributes, parser.CurrentLineNumber))
    try:
        with open(path, "rb") as f:
            parser.ParseFile(f)
    except xml.parsers.expat.ExpatError as e:
        raise ManifestError(f"{path}:{e.lineno}: not a well-formed {what} XML file "
                            f"({xml.parsers.expat.ErrorString(e.code)})") from None
    return elements


def _stem(name: str) -> str:
    """``Audio/quesst14_00001.wav`` -> ``quesst14_00001`` (any folder, a known audio suffix removed)."""
    base = PurePosixPath(name.strip().replace("\\", "/")).name
    return base[: -len(Path(base).suffix)] if Path(base).suffix.lower() in (".wav", ".sph", ".flac") else base


# ---------------------------------------------------------------- the two layouts


def find_database(root: str | Path, folder: str) -> Path:
    """``root`` itself when it holds ``Audio/``, else ``root/<folder>`` when that does."""
    root = Path(root)
    for candidate in (root, root / folder):
        if (candidate / "Audio").is_dir():
            return candidate
    raise ManifestError(f"{root}: no {folder} database here: neither {root / 'Audio'} nor {root / folder / 'Audio'} "
                        "is a folder")


def read_quesst14(root: str | Path, language: str = "nnenglish") -> SearchCorpus:
    """QUESST 2014 (module docstring): dev and eval queries, the documents, the file-level ground truth.

    Args:
        root: ``quesst14Database`` or the folder holding it.
        language: keep the queries and documents of this language key only (S3PRL's QbE: ``nnenglish``);
            ``""``: every language (the language keys are then not read).
    """
    base = find_database(root, QUESST14_FOLDER)
    scoring = base / "scoring"
    truth = {split: _folder(scoring / f"groundtruth_quesst14_{split}", "QUESST 2014 ground-truth")
             for split in SPLITS}
    files = {split: (_pick(truth[split], f"quesst14_{split}.rttm", ".rttm"),
                     _pick(truth[split], "quesst14.ecf.xml", ".ecf.xml"),
                     _pick(truth[split], f"quesst14_{split}.tlist.xml", ".tlist.xml")) for split in SPLITS}
    keys = None
    if language:
        keys = {name: read_language_key(scoring / f"language_key_{name}.lst") for name in ("utterances", *SPLITS)}
        seen = sorted({lang for key in keys.values() for lang, _ in key.values()})
        if language not in seen:
            raise ManifestError(f"{scoring}: language {language!r} is in no language key "
                                f"(language_key_*.lst give: {', '.join(seen)})")
    return _read(QUESST14, base, files, language, keys)


def read_sws2013(root: str | Path) -> SearchCorpus:
    """SWS 2013 (module docstring): dev and eval queries (one recording per term), the documents, the
    file-level ground truth.

    Args:
        root: ``sws2013Database_dev_eval`` or the folder holding it.
    """
    base = find_database(root, SWS2013_FOLDER)
    files = {}
    for split in SPLITS:
        candidates = (base / "scoring_atwv_sws2013" / f"sws2013_{split}", base / f"scoring_atwv_sws2013_{split}")
        folder = next((c for c in candidates if c.is_dir()), None)
        if folder is None:
            packed = base / "scoring_atwv_sws2013_full.tgz"
            hint = f" (unpack {packed.name} into {base})" if packed.is_file() else ""
            raise ManifestError(f"SWS 2013 ground truth of {split} not found: neither {candidates[0]} nor "
                                f"{candidates[1]} is a folder{hint}")
        files[split] = (_pick(folder, f"sws2013_{split}.rttm", ".rttm"), _pick(folder, "sws2013.ecf.xml", ".ecf.xml"),
                        _pick(folder, f"sws2013_{split}.tlist.xml", ".tlist.xml"))
    return _read(SWS2013, base, files, "", None)


def _folder(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise ManifestError(f"{path}: {what} folder not found")
    return path


def _pick(folder: Path, name: str, suffix: str) -> Path:
    """``folder/name``, else the only ``*<suffix>`` file in ``folder``."""
    if (folder / name).is_file():
        return folder / name
    found = sorted(p for p in folder.glob(f"*{suffix}") if p.is_file())
    if len(found) != 1:
        raise ManifestError(f"{folder}: expected {name} (or a single *{suffix} file), found "
                            f"{', '.join(p.name for p in found) or 'none'}")
    return found[0]


def _read(name: str, base: Path, files: dict[str, tuple[Path, Path, Path]], language: str,
          keys: dict[str, dict[str, tuple[str, int]]] | None) -> SearchCorpus:
    """The corpus from each split's (RTTM, ECF, term list) and, with ``language``, the language keys."""

    def language_of(item: str, key: str) -> str:
        if keys is None:
            return ""
        if item not in keys[key]:
            raise ManifestError(f"{base / 'scoring' / f'language_key_{key}.lst'}: no line for {item!r}")
        return keys[key][item][0]

    report: dict = {"files": {split: [str(p) for p in files[split]] for split in SPLITS},
                    "other_language_queries": 0, "other_language_documents": 0, "unlisted_query_files": {},
                    "occurrences": {}, "other_lexemes": {}, "other_language_occurrences": {}}
    documents: dict[str, Record] = {}
    split_documents: dict[str, frozenset[str]] = {}
    skipped_documents: set[str] = set()
    for split in SPLITS:
        ecf = files[split][1]
        listed = set()
        for doc, lineno in read_ecf(ecf):
            if doc in skipped_documents or (doc not in documents and language
                                            and language_of(doc, "utterances") != language):
                skipped_documents.add(doc)
                continue
            if doc not in documents:
                documents[doc] = _record(base / "Audio" / f"{doc}{AUDIO_SUFFIX}", doc, f"{ecf}:{lineno}: document")
            listed.add(doc)
        split_documents[split] = frozenset(listed)
    report["other_language_documents"] = len(skipped_documents)

    queries: list[SpokenQuery] = []
    targets: dict[str, frozenset[str]] = {}
    for split in SPLITS:
        rttm, ecf, tlist = files[split]
        folder = _folder(base / f"{split}_queries", f"{split} queries")
        terms = read_tlist(tlist)
        kept = []
        for termid, lineno in terms:
            lang = language_of(termid, split)
            if language and lang != language:
                report["other_language_queries"] += 1
                continue
            audio = folder / f"{termid}{AUDIO_SUFFIX}"
            if not audio.is_file():
                raise ManifestError(f"{tlist}:{lineno}: term {termid!r} has no query recording ({audio} not found)")
            kept.append(SpokenQuery(_record(audio, termid, f"{tlist}:{lineno}: query"), split, lang))
        listed = {t for t, _ in terms}
        report["unlisted_query_files"][split] = sum(1 for p in folder.glob(f"*{AUDIO_SUFFIX}") if p.stem not in listed)
        found: dict[str, set[str]] = {q.id: set() for q in kept}
        counts = {"read": 0, "other": 0, "other_language": 0}
        for occ in read_rttm(rttm):
            if occ.term not in listed:
                counts["other"] += 1
            elif occ.term not in found or occ.document in skipped_documents:
                counts["other_language"] += 1
            elif occ.document not in split_documents[split]:
                raise ManifestError(f"{rttm}:{occ.line}: term {occ.term!r} occurs in document {occ.document!r}, "
                                    f"which the ECF {ecf} does not list")
            else:
                found[occ.term].add(occ.document)
                counts["read"] += 1
        report["occurrences"][split], report["other_lexemes"][split] = counts["read"], counts["other"]
        report["other_language_occurrences"][split] = counts["other_language"]
        queries.extend(sorted(kept, key=lambda q: q.id))
        targets.update({term: frozenset(docs) for term, docs in found.items()})
        if not kept:
            raise ManifestError(f"{tlist}: no {split} query" + (f" of language {language!r}" if language else ""))
    if not documents:
        raise ManifestError(f"{base}: no document" + (f" of language {language!r}" if language else "")
                            + f" in the ECF files {files['dev'][1]} and {files['eval'][1]}")
    report.update(queries={split: sum(q.split == split for q in queries) for split in SPLITS},
                  documents=len(documents),
                  queries_without_targets={split: sum(not targets[q.id] for q in queries if q.split == split)
                                           for split in SPLITS})
    return SearchCorpus(name, str(base), language, queries, [documents[d] for d in sorted(documents)],
                        split_documents, targets, report)


def _record(path: Path, item: str, where: str) -> Record:
    """A whole-file record of ``path`` (duration from its header); a missing or unreadable file is an error
    naming ``where`` (the list line that names it)."""
    try:
        duration, _ = audio_info(path)
    except AudioError as e:
        raise ManifestError(f"{where} {item!r}: {e}") from None
    return Record(id=item, path=str(path.resolve()), duration=round(duration, 4))
