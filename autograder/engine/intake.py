"""Turn what an instructor downloaded into one notebook per student, ready for grading.

``gather(source, assignment, dest)`` accepts either

* nbgrader's submitted layout, ``source/<student>/<assignment>/*.ipynb`` (or, tolerated,
  ``source/<student>/*.ipynb``), or
* an LMS download: a folder of flat files or a ``.zip``, with file names in nbgrader's
  ``zip_collect`` convention, parsed by a named regular expression with the groups
  ``student_id`` and ``file_id`` and optionally ``timestamp`` (the same contract as
  ``c.FileNameCollectorPlugin.named_regexp``; the default is Blackboard's exact naming,
  ``<assignment>_<student>_attempt_<YYYY-MM-DD-HH-MM-SS>_<file name>``),

and copies one notebook per student, byte for byte, to
``dest/<student>/<assignment>/<assignment>.ipynb`` (nbgrader's submitted layout). A folder is
read as nbgrader's layout when it holds sub-folders and no file whose name matches the LMS
pattern. The notebook's content is not looked at: the grader validates it.

Submission times (``Intake.timestamps``) come from nbgrader's ``timestamp.txt`` beside the
notebook (what ``nbgrader submit`` writes into the exchange and ``nbgrader collect`` keeps), or
from the LMS file name's ``timestamp`` group (the attempt time Blackboard writes). A readable
``timestamp.txt`` is staged too, byte for byte; an LMS download's times are in
``Intake.timestamps`` only (of a download, only the notebook is ever written). Trust: a
submission time is what nbgrader's exchange or the LMS recorded, never anything the graded code
can touch (the sandbox runs later, on the staged notebook only). It is as trustworthy as its
source: an LMS writes its names itself; nbgrader's exchange takes ``timestamp.txt`` as the
student's own ``nbgrader submit`` wrote it into the inbound folder, exactly as nbgrader's
``collect`` and ``autograde`` do.

Nothing in ``source`` is modified, nothing is extracted from a zip by its stored path, symbolic
links are never followed, and no file over ``max_bytes`` is copied (zip entries are read with
that cap, whatever their header says).
"""

from __future__ import annotations

import calendar
import datetime as dt
import os
import re
import shutil
import stat
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

# Blackboard's names, as in nbgrader's user guide ("Managing assignment files manually",
# zip_collect): ps1_bitdiddle_attempt_2016-01-30-15-00-00_problem1.ipynb. Only the file name
# at the end (file_id) is the student's; the LMS writes the rest. So the uploader is the
# *leftmost* `_<id>_attempt_<timestamp>_` (a lazy assignment part, an id without underscores,
# the exact timestamp format): nbgrader's example pattern starts with a greedy `.*_`, which
# takes the *last* one, and a file uploaded as `ex01_victim_attempt_2099-..._ex01.ipynb` then
# replaced the victim's real submission.
DEFAULT_LMS_REGEX = (r"(?P<assignment>.+?)_(?P<student_id>[A-Za-z0-9][A-Za-z0-9.-]*)"
                     r"_attempt_(?P<timestamp>\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2})_(?P<file_id>.+)")


def download_pattern(names: Iterable[str]) -> re.Pattern[str]:
    """The default pattern fitted to one LMS download: its assignment title, fixed.

    Blackboard writes ``<title>_<user>_attempt_<time>_<file name>``, and user names may hold
    underscores, so one name alone cannot say where the title ends (``ex01_bob_alice_...`` is
    user ``bob_alice`` or user ``alice`` of title ``ex01_bob``). Every file of a download has the
    same title, so the title is the one most names give under the strict parse (ids without
    underscores; ties: the shortest); the id is then everything up to the first
    ``_attempt_<time>_`` after it. A name that does not start with that title matches nothing
    and is reported, never attributed.
    """
    strict = re.compile(DEFAULT_LMS_REGEX)
    titles = Counter(m.group("assignment") for n in names if (m := strict.match(n)))
    if not titles:
        return strict
    top = max(titles.values())
    title = min((t for t, c in titles.items() if c == top), key=lambda t: (len(t), t))
    return re.compile(re.escape(title) + r"_(?P<student_id>[A-Za-z0-9][A-Za-z0-9_.-]*?)"
                      r"_attempt_(?P<timestamp>\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2})"
                      r"_(?P<file_id>.+)")


STUDENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""What a student id (and an assignment name) must fully match: no separators, no leading dot."""

NOTEBOOK_SUFFIX = ".ipynb"
TIMESTAMP_FILE = "timestamp.txt"  # nbgrader's name (exchange submit, collect, zip_collect)
SECRET_FILE = "submission_secret.txt"  # nbgrader's name for the feedback's secret (submit)
TIMESTAMP_MAX_BYTES = 1024  # nbgrader's is ~30 bytes; a bigger file is not a timestamp
_BLACKBOARD_TIME = re.compile(r"\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}")

# What copying one submission can raise: an unreadable file (OSError); for a zip entry a bad
# CRC (e.g. a header that lies about the size), truncated or corrupt data, encryption
# (RuntimeError) or an unsupported compression method.
_COPY_ERRORS = (OSError, zipfile.BadZipFile, zlib.error, EOFError, RuntimeError,
                NotImplementedError)


@dataclass
class Intake:
    """What ``gather`` did. Grade exactly ``notebooks``; never glob ``dest``.

    A student is in at most one of ``notebooks`` and ``problems``; ``notes`` and ``flags`` may
    accompany either.
    """

    notebooks: dict[str, Path] = field(default_factory=dict)
    """Student id -> the staged copy ``dest/<student>/<assignment>/<assignment>.ipynb``."""
    problems: dict[str, list[str]] = field(default_factory=dict)
    """Student id, or the raw file/entry name when no valid id could be read from it -> why it
    cannot be graded (nothing was staged for it)."""
    notes: dict[str, list[str]] = field(default_factory=dict)
    """Student id -> harmless remarks (a renamed notebook, ignored files, earlier attempts)."""
    flags: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    """Student id -> flag word -> reasons: what a human should check about the files (a file
    name that imitates another student's LMS name: ``tampering``; two files that claim to be
    the same one: ``ambiguous``). Never a reason to grade another student's file."""
    timestamps: dict[str, dt.datetime] = field(default_factory=dict, compare=False)
    """Student id (one of ``notebooks``) -> when the submission was handed in (aware, UTC):
    from nbgrader's ``timestamp.txt`` or the LMS name's attempt time, read as nbgrader reads
    them (``nbgrader.utils.parse_utc``: a time without a zone is UTC). No entry when neither
    says; an unreadable one is a note instead. Recorded by nbgrader's exchange or the LMS, not
    by anything the graded code runs. Not part of ``==``, which compares what was staged and
    said (compare ``timestamps`` itself)."""

    def problem(self, key: str, reason: str) -> None:
        """Record why ``key`` (a student id or a raw name) cannot be graded."""
        self.problems.setdefault(key, []).append(reason)

    def note(self, key: str, remark: str) -> None:
        """Record a harmless remark about student ``key``."""
        self.notes.setdefault(key, []).append(remark)

    def flag(self, key: str, word: str, reason: str) -> None:
        """Flag student ``key`` with ``word`` for a human to check, saying why."""
        reasons = self.flags.setdefault(key, {}).setdefault(word, [])
        if reason not in reasons:
            reasons.append(reason)


@dataclass(frozen=True)
class _Candidate:
    raw: str  # the name shown in messages: a file name, or an entry's full name in the zip
    name: str  # the file's own name as the student gave it (an LMS name's file_id)
    origin: Path | zipfile.ZipInfo
    mtime: float
    size: int  # stat's size; a zip header's is recorded but never trusted
    stamp: tuple[int, ...] | None = None  # the LMS timestamp's numbers, when it has one
    imitates: str | None = None  # the student id another LMS name inside file_id names
    when: str | None = None  # the LMS name's timestamp text, when it has one

    @property
    def is_notebook(self) -> bool:
        return self.raw.lower().endswith(NOTEBOOK_SUFFIX)


class _TooLargeError(Exception):
    pass


_Copier = Callable[[_Candidate, Path, int], None]


def gather(source: Path, assignment: str, dest: Path, lms_regex: str | None = None,
           max_bytes: int = 50 * 2**20) -> Intake:
    """Stage one notebook per student from ``source`` into ``dest`` in nbgrader's layout.

    ``source`` is a folder in nbgrader's submitted layout, or an LMS download (a folder of
    flat files or a ``.zip``) whose file names ``lms_regex`` parses (default
    ``DEFAULT_LMS_REGEX``; matched from the start of the base name, like nbgrader's
    ``FileNameCollectorPlugin``). A custom ``lms_regex`` must attribute a name to its
    uploader: only ``file_id`` is the student's to choose, so the groups before it must match
    what the LMS writes (anchored, not a greedy ``.*``). Per student the notebook graded is,
    within the latest LMS attempt: ``<assignment>.ipynb``; else the only notebook; else the
    newest one (by modification time). A file whose ``file_id`` is itself an LMS name is
    graded as its uploader's and flagged ``tampering`` (the student it names gets a note);
    two notebooks of one attempt with the same name are flagged ``ambiguous``, both named.
    Everything else lands in ``Intake.notes`` or ``Intake.problems``; the result's dicts are
    sorted by key. A staged copy from an earlier run is removed before a student is staged
    again.

    Raises ValueError for an unusable ``source`` (missing, not a folder or a zip, a corrupt
    zip), an ``assignment`` that is not a plain name, a ``lms_regex`` without the groups
    ``student_id`` and ``file_id``, or a ``dest`` inside a ``source`` folder.
    """
    if not STUDENT_ID.fullmatch(assignment):
        raise ValueError(f"invalid assignment name {assignment!r}")
    pattern = _compile(lms_regex or DEFAULT_LMS_REGEX)
    intake = Intake()
    if source.is_dir():
        if dest.resolve().is_relative_to(source.resolve()):
            raise ValueError(f"{dest} is inside {source}: staging must not modify the source")
        entries = _visible(source.iterdir())
        stamp_files: dict[str, Path] = {}
        if _is_nbgrader_layout(entries, pattern):
            groups = _nbgrader_candidates(entries, assignment, pattern, intake, stamp_files)
        else:
            if lms_regex is None:
                pattern = download_pattern(p.name for p in entries)
            groups = _folder_candidates(entries, pattern, intake)
            _flag_imitations(groups, pattern, intake, lms_regex is None)
        _stage_all(groups, assignment, dest, intake, _copy_file, max_bytes, stamp_files)
    elif source.is_file() and zipfile.is_zipfile(source):
        try:
            with zipfile.ZipFile(source) as zf:
                if lms_regex is None:
                    pattern = download_pattern(re.split(r"[/\\]", i.filename)[-1]
                                               for i in zf.infolist())
                groups = _zip_candidates(zf, pattern, intake)
                _flag_imitations(groups, pattern, intake, lms_regex is None)
                _stage_all(groups, assignment, dest, intake, _zip_copier(zf), max_bytes)
        except zipfile.BadZipFile as exc:
            raise ValueError(f"{source} is not a readable zip file: {exc}") from exc
    else:
        raise ValueError(f"{source} is neither a folder nor a zip file")
    return Intake(*(dict(sorted(d.items())) for d in
                    (intake.notebooks, intake.problems, intake.notes, intake.flags,
                     intake.timestamps)))


def is_lms_download(source: Path, lms_regex: str | None = None) -> bool:
    """Whether ``gather`` reads ``source`` as an LMS download (a zip, or a folder of LMS-named
    files) rather than nbgrader's layout. Such a download holds one assignment's files only."""
    if not source.is_dir():
        return True
    entries = _visible(source.iterdir())
    return not _is_nbgrader_layout(entries, _compile(lms_regex or DEFAULT_LMS_REGEX))


def _compile(regex: str) -> re.Pattern[str]:
    pattern = re.compile(regex)
    missing = {"student_id", "file_id"} - set(pattern.groupindex)
    if missing:
        raise ValueError(f"LMS regex {regex!r} lacks the named group(s) {sorted(missing)}")
    return pattern


def _hidden(name: str) -> bool:
    # Dot files and macOS's __MACOSX/._name copies: the latter match the LMS pattern like the
    # real file and would otherwise compete with it.
    return name.startswith(".") or name == "__MACOSX"


def _visible(paths: Iterable[Path]) -> list[Path]:
    return sorted(p for p in paths if not _hidden(p.name))


def _is_nbgrader_layout(entries: list[Path], pattern: re.Pattern[str]) -> bool:
    has_folders = any(p.is_dir() and not p.is_symlink() for p in entries)
    return has_folders and not any(p.is_file() and pattern.match(p.name) for p in entries)


def _file_candidate(path: Path, name: str | None = None, stamp: tuple[int, ...] | None = None,
                    imitates: str | None = None, when: str | None = None) -> _Candidate:
    st = path.lstat()
    return _Candidate(path.name, name or path.name, path, st.st_mtime, st.st_size, stamp,
                      imitates, when)


def _nbgrader_candidates(entries: list[Path], assignment: str, pattern: re.Pattern[str],
                         intake: Intake, stamp_files: dict[str, Path]
                         ) -> dict[str, list[_Candidate]]:
    groups: dict[str, list[_Candidate]] = {}
    for entry in entries:
        if entry.is_symlink():
            intake.problem(entry.name, "symbolic link; not followed")
        elif entry.is_file() and entry.name.lower().endswith(NOTEBOOK_SUFFIX):
            intake.problem(entry.name, "notebook outside any student folder; not graded")
        elif not entry.is_dir():
            continue
        elif not STUDENT_ID.fullmatch(entry.name):
            intake.problem(entry.name, f"invalid student id {entry.name!r}")
        else:
            folder = entry / assignment
            if not folder.is_dir() or folder.is_symlink():
                folder = entry  # tolerated: notebooks directly in <student>/
            found, stamp_file = _student_files(entry.name, folder, intake)
            if any(pattern.match(c.raw) for c in found):
                # An extracted LMS download one level down: its files are many students' work.
                intake.problem(entry.name, "holds LMS-named files; pass this folder as the source")
            else:
                groups[entry.name] = found
                if stamp_file is not None:
                    stamp_files[entry.name] = stamp_file
    return groups


def _student_files(student: str, folder: Path, intake: Intake
                   ) -> tuple[list[_Candidate], Path | None]:
    """The files of one student's folder, and its nbgrader ``timestamp.txt`` if it has one."""
    found, stamp_file = [], None
    for path in _visible(folder.iterdir()):
        if path.is_symlink():
            intake.note(student, f"ignored {path.name} (symbolic link)")
        elif path.is_file() and path.name == TIMESTAMP_FILE:
            stamp_file = path
        elif path.is_file() and path.name == SECRET_FILE:
            pass  # nbgrader's own (submit writes it, release_feedback reads it): not the student's
        elif path.is_file():
            found.append(_file_candidate(path))
    return found, stamp_file


def _folder_candidates(entries: list[Path], pattern: re.Pattern[str],
                       intake: Intake) -> dict[str, list[_Candidate]]:
    groups: dict[str, list[_Candidate]] = {}
    for path in entries:
        if path.is_symlink():
            intake.problem(path.name, "symbolic link; not followed")
        elif path.is_file() and (parsed := _parse_lms_name(path.name, path.name, pattern, intake)):
            student, name, stamp, imitates, when = parsed
            groups.setdefault(student, []).append(_file_candidate(path, name, stamp, imitates,
                                                                  when))
    return groups


def _zip_candidates(zf: zipfile.ZipFile, pattern: re.Pattern[str],
                    intake: Intake) -> dict[str, list[_Candidate]]:
    groups: dict[str, list[_Candidate]] = {}
    for info in sorted(zf.infolist(), key=lambda i: i.filename):
        raw = info.filename
        parts = [p for p in re.split(r"[/\\]", raw) if p not in ("", ".")]
        if info.is_dir() or not parts:
            continue
        if raw.startswith(("/", "\\")) or ".." in parts or re.match(r"[A-Za-z]:", raw):
            intake.problem(raw, "unsafe path in zip; not extracted")
        elif any(_hidden(p) for p in parts):
            continue
        elif stat.S_ISLNK(info.external_attr >> 16):
            intake.problem(raw, "symbolic link in zip; skipped")
        elif parsed := _parse_lms_name(raw, parts[-1], pattern, intake):
            student, name, stamp, imitates, when = parsed
            mtime = calendar.timegm((*info.date_time, 0, 0, 0))
            groups.setdefault(student, []).append(
                _Candidate(raw, name, info, mtime, info.file_size, stamp, imitates, when))
    return groups


def _parse_lms_name(raw: str, base: str, pattern: re.Pattern[str], intake: Intake
                    ) -> tuple[str, str, tuple[int, ...] | None, str | None, str | None] | None:
    """(student, the file's own name, timestamp's numbers, the student id another LMS name
    inside the file's own name names, if any, the timestamp's text) from an LMS file name, or
    None to skip it."""
    match = pattern.match(base)
    groups = match.groupdict() if match else {}
    student, file_id = groups.get("student_id"), groups.get("file_id")
    if not student or file_id is None:
        # Only a notebook that cannot be attributed is a loss worth reporting.
        if base.lower().endswith(NOTEBOOK_SUFFIX):
            intake.problem(raw, f"file name does not match the LMS pattern {pattern.pattern}")
        return None
    if not STUDENT_ID.fullmatch(student):
        intake.problem(raw, f"invalid student id {student!r}")
        return None
    # As nbgrader's zip_collect does: file_id's stem plus the real file's extension.
    name = os.path.splitext(os.path.basename(file_id))[0] + os.path.splitext(base)[1]
    timestamp = groups.get("timestamp")
    # Compared as the sequence of numbers it holds: fits 2016-01-30-15-00-00 and ISO alike.
    stamp = tuple(int(n) for n in re.findall(r"\d+", timestamp)) if timestamp else None
    return (student, name, stamp, _imitated(os.path.basename(file_id), pattern),
            timestamp or None)


# Blackboard's `_<id>_attempt_<timestamp>_` anywhere: what an imitation under the default
# pattern looks like even where the pattern itself would not parse the file's own name.
_ATTEMPT_MARK = re.compile(r"(?:^|_)([A-Za-z0-9][A-Za-z0-9.-]*)_attempt_\d{4}(?:-\d{2}){5}_")


def _imitated(file_id: str, pattern: re.Pattern[str]) -> str | None:
    """The student id that ``file_id`` (chosen by the uploader) names as an LMS name would."""
    match = pattern.match(file_id)
    student = match.groupdict().get("student_id") if match else None
    if student and STUDENT_ID.fullmatch(student):
        return student
    mark = _ATTEMPT_MARK.search(file_id)
    return mark.group(1) if mark else None


def _flag_imitations(groups: dict[str, list[_Candidate]], pattern: re.Pattern[str],
                     intake: Intake, default: bool) -> None:
    """Flag every upload whose own file name is another LMS name, and tell the student it names.

    Under the default (Blackboard) pattern any such name is flagged: no honest file is called
    `..._<id>_attempt_<YYYY-MM-DD-HH-MM-SS>_...`. Under a custom pattern, which may be loose
    enough to parse ordinary names, only one that names another student of this download is.
    """
    for uploader in sorted(groups):
        for c in groups[uploader]:
            if c.imitates is None or not (default or (c.imitates in groups
                                                      and c.imitates != uploader)):
                continue
            intake.flag(uploader, "tampering", f"uploaded {c.raw}: its file name imitates an LMS "
                        f"name of student {c.imitates}; graded as {uploader}'s own file")
            if c.imitates in groups and c.imitates != uploader:
                intake.note(c.imitates, f"{c.raw} (uploaded by {uploader}) names this student; "
                            f"it is {uploader}'s file, not graded as this student's")


def _pick(found: list[_Candidate], assignment: str
          ) -> tuple[_Candidate | None, list[str], list[str]]:
    """The notebook to grade among one student's files, the notes that explain the choice, and
    the reasons to flag it ``ambiguous`` (another notebook of the same attempt has its name)."""
    notes = [f"ignored {c.raw} (not a notebook)" for c in found if not c.is_notebook]
    books = [c for c in found if c.is_notebook]
    if not books:
        return None, notes, []
    latest = max(_attempt(c) for c in books)
    current = [c for c in books if _attempt(c) == latest]
    right = [c for c in current if c.name == f"{assignment}{NOTEBOOK_SUFFIX}"]
    pool = right or current
    chosen = max(pool, key=lambda c: (c.mtime, c.raw))
    if not right:
        newest = f" (the newest of {len(pool)})" if len(pool) > 1 else ""
        notes.append(f"notebook was named {chosen.name}{newest}; graded anyway")
    notes += [f"ignored {c.raw} (another notebook)" for c in current if c is not chosen]
    notes += [f"ignored {c.raw} (earlier attempt)" for c in books if _attempt(c) != latest]
    twins = [c for c in current if c.name == chosen.name and c is not chosen]
    ambiguous = [(f"{len(twins) + 1} notebooks named {chosen.name} in one attempt: graded "
                  f"{chosen.raw} (the newest), not {', '.join(c.raw for c in twins)}")
                 ] if twins else []
    return chosen, notes, ambiguous


def _attempt(c: _Candidate) -> tuple[bool, tuple[int, ...]]:
    return c.stamp is not None, c.stamp or ()


# What a time nbgrader writes or reads can hold: digits, letters (month and zone names), and
# the separators of dates, times and offsets; never a path separator.
_TIME_TEXT = re.compile(r"[0-9A-Za-z :.,+\-_]{1,64}")


def parse_time(text: str) -> dt.datetime:
    """A submission time as nbgrader reads one (``nbgrader.utils.parse_utc``: ``timestamp.txt``
    in nbgrader's exchange format ``%Y-%m-%d %H:%M:%S.%f %Z``, ISO 8601, ...; no zone = UTC),
    aware, in UTC. Blackboard's ``YYYY-MM-DD-HH-MM-SS`` is read by that exact format (dateutil,
    which ``parse_utc`` and so ``nbgrader zip_collect`` use, takes its last ``-SS`` for a zone
    offset). Raises ValueError when it is not a time."""
    if _BLACKBOARD_TIME.fullmatch(text.strip()):
        when = dt.datetime.strptime(text.strip(), "%Y-%m-%d-%H-%M-%S")
    else:
        from nbgrader.utils import parse_utc

        # parse_utc hands a zone word to dateutil's gettz, which opens a path as a zone file:
        # a student's timestamp.txt must never make the grader read /proc/... or hang on it.
        if not _TIME_TEXT.fullmatch(text.strip()):
            raise ValueError("not a submission time (unexpected characters)")
        try:
            when = parse_utc(text)
        except Exception as exc:  # dateutil's many ways of saying "no": never the run's end
            raise ValueError(str(exc)) from exc
    return when.replace(tzinfo=dt.UTC)


def _read_timestamp_file(path: Path, student: str, intake: Intake
                         ) -> tuple[bytes, dt.datetime] | None:
    """``timestamp.txt``'s bytes and time, or None (with a note saying why) when it has none."""
    why = f"no submission time recorded, so no late check for {student}"
    try:
        if path.lstat().st_size > TIMESTAMP_MAX_BYTES:
            intake.note(student, f"{TIMESTAMP_FILE} is over {TIMESTAMP_MAX_BYTES} bytes, "
                        f"not a timestamp: {why}")
            return None
        data = path.read_bytes()[:TIMESTAMP_MAX_BYTES]
        text = data.decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        intake.note(student, f"{TIMESTAMP_FILE} is unreadable ({type(exc).__name__}): {why}")
        return None
    if not text:
        intake.note(student, f"{TIMESTAMP_FILE} is empty: {why}")
        return None
    try:
        return data, parse_time(text)
    except ValueError:
        intake.note(student, f"{TIMESTAMP_FILE} holds no time nbgrader can read: {why}")
        return None


def _lms_time(c: _Candidate, student: str, intake: Intake) -> dt.datetime | None:
    """The LMS name's attempt time (it stays in ``Intake.timestamps``: nothing is staged but the
    notebook from an LMS download)."""
    if c.when is None:
        return None
    try:
        when = parse_time(c.when)
    except ValueError:
        intake.note(student, f"the attempt time in {c.raw} is no time nbgrader can read: "
                    f"no submission time recorded, so no late check for {student}")
        return None
    return when


def _stage_all(groups: dict[str, list[_Candidate]], assignment: str, dest: Path,
               intake: Intake, copy: _Copier, max_bytes: int,
               stamp_files: dict[str, Path] | None = None) -> None:
    for student in sorted(groups):
        chosen, notes, ambiguous = _pick(groups[student], assignment)
        for remark in notes:
            intake.note(student, remark)
        for reason in ambiguous:
            intake.flag(student, "ambiguous", reason)
        target = dest / student / assignment / f"{assignment}{NOTEBOOK_SUFFIX}"
        target.unlink(missing_ok=True)
        (target.parent / TIMESTAMP_FILE).unlink(missing_ok=True)
        if chosen is None:
            intake.problem(student, f"no notebook (.ipynb) found for {assignment}")
            continue
        try:
            copy(chosen, target, max_bytes)
        except _TooLargeError:
            intake.problem(student, f"file too large: {chosen.raw} is over {max_bytes} bytes")
        except _COPY_ERRORS as exc:
            intake.problem(student, f"cannot copy {chosen.raw}: {exc}")
        else:
            intake.notebooks[student] = target
            stamp_file = (stamp_files or {}).get(student)
            if stamp_file is None:
                when = _lms_time(chosen, student, intake)
            elif timed := _read_timestamp_file(stamp_file, student, intake):
                (target.parent / TIMESTAMP_FILE).write_bytes(timed[0])  # as collect left it
                when = timed[1]
            else:
                when = None
            if when is not None:
                intake.timestamps[student] = when


def _copy_file(c: _Candidate, target: Path, max_bytes: int) -> None:
    if c.size > max_bytes:
        raise _TooLargeError
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(c.origin, target)


def _zip_copier(zf: zipfile.ZipFile) -> _Copier:
    def copy(c: _Candidate, target: Path, max_bytes: int) -> None:
        # The header's size is not trusted: read one byte past the cap and look.
        with zf.open(c.origin) as fh:
            data = fh.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise _TooLargeError
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    return copy
