"""autograder.engine.intake: from what an instructor downloads to one notebook per student,
staged in nbgrader's submitted layout, without trusting file names, sizes or zip headers."""

from __future__ import annotations

import datetime
import os
import stat
import struct
import zipfile
from pathlib import Path

import pytest

from autograder.engine.intake import (
    STUDENT_ID,
    Intake,
    download_pattern,
    gather,
)

A = "ex01"
LMS = "ps1_{}_attempt_{}_{}"  # the naming of nbgrader's zip_collect documentation


def write(path: Path, data: bytes, mtime: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root (relative path -> bytes): to prove what was and was not written."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def staged(dest: Path, *students: str) -> dict[str, Path]:
    return {s: dest / s / A / f"{A}.ipynb" for s in students}


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "out" / "submitted"


def test_nbgrader_layout(tmp_path: Path, dest: Path) -> None:
    src = tmp_path / "submitted"
    write(src / "alice" / A / f"{A}.ipynb", b"alice")
    write(src / "alice" / A / "data.csv", b"1,2")
    write(src / "alice" / A / ".ipynb_checkpoints" / f"{A}-checkpoint.ipynb", b"old")
    write(src / "bob" / A / "Untitled.ipynb", b"bob")
    write(src / "carol" / A / "answers.txt", b"carol")
    write(src / "dave" / f"{A}.ipynb", b"dave")  # no assignment level: tolerated
    write(src / "erin" / A / "a.ipynb", b"erin-old", mtime=1_000)
    write(src / "erin" / A / "b.ipynb", b"erin-new", mtime=2_000)
    write(src / "-rf" / A / f"{A}.ipynb", b"x")
    write(src / "bad id" / A / f"{A}.ipynb", b"x")
    write(src / ("a" * 65) / A / f"{A}.ipynb", b"x")
    write(src / "stray.ipynb", b"x")
    before = tree(src)

    intake = gather(src, A, dest)

    assert intake == Intake(
        notebooks=staged(dest, "alice", "bob", "dave", "erin"),
        problems={
            "-rf": ["invalid student id '-rf'"],
            "a" * 65: [f"invalid student id {'a' * 65!r}"],
            "bad id": ["invalid student id 'bad id'"],
            "carol": ["no notebook (.ipynb) found for ex01"],
            "stray.ipynb": ["notebook outside any student folder; not graded"],
        },
        notes={
            "alice": ["ignored data.csv (not a notebook)"],
            "bob": ["notebook was named Untitled.ipynb; graded anyway"],
            "carol": ["ignored answers.txt (not a notebook)"],
            "erin": ["notebook was named b.ipynb (the newest of 2); graded anyway",
                     "ignored a.ipynb (another notebook)"],
        },
    )
    assert list(intake.notebooks) == sorted(intake.notebooks)
    assert {s: p.read_bytes() for s, p in intake.notebooks.items()} == {
        "alice": b"alice", "bob": b"bob", "dave": b"dave", "erin": b"erin-new"}
    assert tree(src) == before
    assert set(tree(dest)) == {f"{s}/{A}/{A}.ipynb" for s in intake.notebooks}


def test_lms_folder_latest_attempt_wins(tmp_path: Path, dest: Path) -> None:
    src = tmp_path / "downloaded"
    write(src / LMS.format("bob", "2016-01-30-15-30-10", f"{A}.ipynb"), b"bob-1")
    write(src / LMS.format("bob", "2016-01-30-16-30-10", f"{A}.ipynb"), b"bob-2")
    write(src / LMS.format("bob", "2016-01-30-16-30-10", "jupyter.png"), b"png")
    write(src / LMS.format("hacker", "2016-01-30-20-30-10", "problem1.ipynb"), b"hacker")
    write(src / "mystery.ipynb", b"?")
    write(src / "readme.txt", b"not a submission")
    (src / "unrelated-folder").mkdir()

    intake = gather(src, A, dest)

    assert intake == Intake(
        notebooks=staged(dest, "bob", "hacker"),
        problems={"mystery.ipynb": [
            "file name does not match the LMS pattern "
            f"{download_pattern(['ps1_bob_attempt_2016-01-30-15-30-10_x']).pattern}"]},
        notes={
            "bob": ["ignored ps1_bob_attempt_2016-01-30-16-30-10_jupyter.png (not a notebook)",
                    "ignored ps1_bob_attempt_2016-01-30-15-30-10_ex01.ipynb (earlier attempt)"],
            "hacker": ["notebook was named problem1.ipynb; graded anyway"],
        },
    )
    assert intake.notebooks["bob"].read_bytes() == b"bob-2"
    assert intake.notebooks["hacker"].read_bytes() == b"hacker"


def test_lms_folder_custom_regex(tmp_path: Path, dest: Path) -> None:
    src = tmp_path / "canvas"
    write(src / f"alice_{A}.ipynb", b"alice")
    write(src / "bob_homework.ipynb", b"bob")
    write(src / f"bad!_{A}.ipynb", b"x")
    write(src / f"sub-.._{A}.ipynb", b"x")
    write(src / f".._{A}.ipynb", b"x")  # hidden: never looked at

    intake = gather(src, A, dest, lms_regex=r"(?:sub-)?(?P<student_id>[^_]+)_(?P<file_id>.+)")

    assert intake == Intake(
        notebooks=staged(dest, "alice", "bob"),
        problems={f"bad!_{A}.ipynb": ["invalid student id 'bad!'"],
                  f"sub-.._{A}.ipynb": ["invalid student id '..'"]},
        notes={"bob": ["notebook was named homework.ipynb; graded anyway"]},
    )


def make_zip(path: Path, entries: dict[str | zipfile.ZipInfo, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def symlink_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def test_zip_is_never_trusted(tmp_path: Path, dest: Path) -> None:
    t = "2024-01-02-00-00-00"
    traversal = "../../" + LMS.format("evil", t, f"{A}.ipynb")
    absolute = "/tmp/" + LMS.format("abs", t, f"{A}.ipynb")
    bomb = LMS.format("carol", t, f"{A}.ipynb")
    big = zipfile.ZipInfo(LMS.format("bob", t, f"{A}.ipynb"))
    big.compress_type = zipfile.ZIP_STORED
    source = make_zip(tmp_path / "gradebook.zip", {
        "gradebook/": b"",
        "gradebook/" + LMS.format("alice", t, f"{A}.ipynb"): b"alice",
        "__MACOSX/gradebook/._" + LMS.format("alice", t, f"{A}.ipynb"): b"resource fork",
        traversal: b"evil",
        absolute: b"evil",
        symlink_entry(LMS.format("erin", t, f"{A}.ipynb")): b"/etc/passwd",
        big: os.urandom(2_000),
        bomb: b"\0" * 5_000_000,  # a few KiB compressed
    })
    assert os.path.getsize(source) < 20_000

    intake = gather(source, A, dest, max_bytes=1_000)

    assert intake == Intake(
        notebooks=staged(dest, "alice"),
        problems={
            absolute: ["unsafe path in zip; not extracted"],
            traversal: ["unsafe path in zip; not extracted"],
            "bob": [f"file too large: {big.filename} is over 1000 bytes"],
            "carol": [f"file too large: {bomb} is over 1000 bytes"],
            LMS.format("erin", t, f"{A}.ipynb"): ["symbolic link in zip; skipped"],
        },
        notes={},
    )
    assert intake.notebooks["alice"].read_bytes() == b"alice"
    assert tree(tmp_path) == {"gradebook.zip": source.read_bytes(),
                              f"out/submitted/alice/{A}/{A}.ipynb": b"alice"}


def test_zip_header_that_understates_the_size(tmp_path: Path, dest: Path) -> None:
    name = LMS.format("dave", "2024-01-02-00-00-00", f"{A}.ipynb")
    data = bytearray(make_zip(tmp_path / "lying.zip", {name: b"\0" * 5_000_000}).read_bytes())
    # Claim 100 bytes in both the local header and the central directory.
    struct.pack_into("<I", data, data.find(b"PK\x03\x04") + 22, 100)
    struct.pack_into("<I", data, data.find(b"PK\x01\x02") + 24, 100)
    source = tmp_path / "lying.zip"
    source.write_bytes(bytes(data))

    intake = gather(source, A, dest, max_bytes=1_000)

    assert intake == Intake(
        notebooks={},
        problems={"dave": [f"cannot copy {name}: Bad CRC-32 for file {name!r}"]},
        notes={},
    )
    assert not dest.exists()


def test_plain_file_size_cap_and_stale_copy_removed(tmp_path: Path, dest: Path) -> None:
    src = tmp_path / "submitted"
    notebook = write(src / "alice" / A / f"{A}.ipynb", b"small")
    assert gather(src, A, dest, max_bytes=10).notebooks == staged(dest, "alice")

    notebook.write_bytes(b"x" * 11)
    intake = gather(src, A, dest, max_bytes=10)

    assert intake == Intake(notebooks={},
                            problems={"alice": [f"file too large: {A}.ipynb is over 10 bytes"]},
                            notes={})
    assert not (dest / "alice" / A / f"{A}.ipynb").exists()


@pytest.mark.parametrize("name", ["alice", "s1234567", "a.b-c_d", "A" * 64])
def test_student_id_accepted(name: str) -> None:
    assert STUDENT_ID.fullmatch(name)


@pytest.mark.parametrize("name", ["../evil", "a/b", "a\\b", ".", "..", ".hidden", "-rf", "",
                                  "bad id", "A" * 65, "José"])
def test_student_id_rejected(name: str) -> None:
    assert not STUDENT_ID.fullmatch(name)


def test_unusable_arguments(tmp_path: Path, dest: Path) -> None:
    src = tmp_path / "submitted"
    src.mkdir()
    with pytest.raises(ValueError, match="invalid assignment name"):
        gather(src, "../ex01", dest)
    with pytest.raises(ValueError, match="lacks the named group"):
        gather(src, A, dest, lms_regex=r"(?P<student_id>\w+)")
    with pytest.raises(ValueError, match="neither a folder nor a zip"):
        gather(tmp_path / "missing", A, dest)
    with pytest.raises(ValueError, match="inside"):
        gather(src, A, src / "out")


def test_extracted_lms_folder_one_level_down(tmp_path: Path, dest: Path) -> None:
    src = tmp_path / "downloads"
    write(src / "gradebook_ex01" / LMS.format("bob", "2016-01-30-15-30-10", f"{A}.ipynb"), b"bob")

    intake = gather(src, A, dest)

    assert intake == Intake(
        notebooks={},
        problems={"gradebook_ex01": ["holds LMS-named files; pass this folder as the source"]},
        notes={},
    )
    assert gather(src / "gradebook_ex01", A, dest).notebooks == staged(dest, "bob")


BB = "ex01_{}_attempt_{}_{}"  # Blackboard's naming, the default pattern's


@pytest.mark.parametrize("as_zip", [False, True], ids=["folder", "zip"])
def test_lms_upload_named_like_another_student_is_the_uploaders(tmp_path: Path, dest: Path,
                                                                as_zip: bool) -> None:
    """An upload whose own file name embeds another student's id and a later attempt stays
    the uploader's (flagged); the student it names keeps their real submission (noted)."""
    forged = BB.format("victim", "2099-01-01-00-00-00", f"{A}.ipynb")
    files = {BB.format("victim", "2024-01-01-10-00-00", f"{A}.ipynb"): b"victim",
             BB.format("attacker", "2024-01-01-11-00-00", forged): b"attacker"}
    if as_zip:
        source = make_zip(tmp_path / "gradebook.zip", dict(files))
    else:
        source = tmp_path / "downloaded"
        for name, data in files.items():
            write(source / name, data)
    attacker_raw = BB.format("attacker", "2024-01-01-11-00-00", forged)

    intake = gather(source, A, dest)

    assert {s: p.read_bytes() for s, p in intake.notebooks.items()} == {
        "attacker": b"attacker", "victim": b"victim"}
    assert intake.problems == {}
    assert intake.flags == {"attacker": {"tampering": [
        (f"uploaded {attacker_raw}: its file name imitates an LMS name of student victim; "
        "graded as attacker's own file")]}}
    assert intake.notes == {
        "attacker": [f"notebook was named {forged}; graded anyway"],
        "victim": [(f"{attacker_raw} (uploaded by attacker) names this student; it is "
                   "attacker's file, not graded as this student's")]}


def test_lms_default_pattern_is_anchored(tmp_path: Path, dest: Path) -> None:
    """The uploader is the leftmost `_<id>_attempt_<timestamp>_`: an assignment part with
    underscores is fine, a timestamp in another format or a missing attempt part is not a
    submission of anyone."""
    src = tmp_path / "downloaded"
    write(src / f"ex01_overfitting_alice_attempt_2024-01-01-10-00-00_{A}.ipynb", b"alice")
    write(src / f"ex01_bob_attempt_2024-1-1_{A}.ipynb", b"bob")
    write(src / f"carol_attempt_2024-01-01-10-00-00_{A}.ipynb", b"carol")

    intake = gather(src, A, dest)

    assert {s: p.read_bytes() for s, p in intake.notebooks.items()} == {"alice": b"alice"}
    assert set(intake.problems) == {f"ex01_bob_attempt_2024-1-1_{A}.ipynb",
                                    f"carol_attempt_2024-01-01-10-00-00_{A}.ipynb"}
    assert intake.flags == {}


def test_lms_two_notebooks_of_one_attempt_are_ambiguous(tmp_path: Path, dest: Path) -> None:
    """Two files of one student, one attempt, one name: the newest is graded, both are named
    in an `ambiguous` flag."""
    t = "2024-01-02-00-00-00"
    name = BB.format("bob", t, f"{A}.ipynb")
    old, new = zipfile.ZipInfo("a/" + name, (2024, 1, 1, 0, 0, 0)), \
        zipfile.ZipInfo("b/" + name, (2024, 1, 2, 0, 0, 0))
    source = make_zip(tmp_path / "gradebook.zip", {old: b"old", new: b"new"})

    intake = gather(source, A, dest)

    assert intake.notebooks["bob"].read_bytes() == b"new"
    assert intake.flags == {"bob": {"ambiguous": [
        (f"2 notebooks named {A}.ipynb in one attempt: graded b/{name} (the newest), "
        f"not a/{name}")]}}
    assert intake.notes == {"bob": [f"ignored a/{name} (another notebook)"]}


def test_custom_regex_flags_only_names_of_other_students(tmp_path: Path, dest: Path) -> None:
    """Under a loose custom pattern an ordinary file name may parse too: only one that names
    another student of the download is flagged."""
    src = tmp_path / "canvas"
    write(src / f"alice_{A}.ipynb", b"alice")
    write(src / f"mallory_alice_{A}.ipynb", b"mallory")
    write(src / "bob_my_notebook.ipynb", b"bob")

    intake = gather(src, A, dest, lms_regex=r"(?P<student_id>[^_]+)_(?P<file_id>.+)")

    assert {s: p.read_bytes() for s, p in intake.notebooks.items()} == {
        "alice": b"alice", "bob": b"bob", "mallory": b"mallory"}
    assert list(intake.flags) == ["mallory"]
    assert "student alice" in intake.flags["mallory"]["tampering"][0]


def test_names_that_are_not_utf8(tmp_path: Path, dest: Path) -> None:
    """Folder and file names are bytes on Linux: undecodable ones are reported or noted
    (Python shows them with surrogate escapes), never a crash."""
    src = tmp_path / "submitted"
    write(src / "alice" / A / f"{A}.ipynb", b"alice")
    bad_folder = os.fsdecode(b"caf\xe9")
    write(src / bad_folder / A / f"{A}.ipynb", b"x")
    bad_file = os.fsdecode(b"notes\xff.txt")
    write(src / "bob" / A / os.fsdecode(b"\xff\xfe.ipynb"), b"bob")
    write(src / "bob" / A / bad_file, b"x")

    intake = gather(src, A, dest)

    assert {s: p.read_bytes() for s, p in intake.notebooks.items()} == {
        "alice": b"alice", "bob": b"bob"}
    assert intake.problems == {bad_folder: [f"invalid student id {bad_folder!r}"]}
    assert f"ignored {bad_file} (not a notebook)" in intake.notes["bob"]


def test_a_user_name_with_underscores_is_one_student(tmp_path: Path, dest: Path) -> None:
    """Blackboard user ``bob_alice`` uploads later than ``alice``: the download's title (the one
    most names give) splits the name, so bob_alice's file is bob_alice's, and alice keeps hers."""
    src = tmp_path / "downloaded"
    title = "ex01_overfitting"
    write(src / f"{title}_alice_attempt_2026-12-01-10-00-00_{A}.ipynb", b"alice")
    write(src / f"{title}_carol_attempt_2026-12-01-11-00-00_{A}.ipynb", b"carol")
    write(src / f"{title}_bob_alice_attempt_2026-12-02-10-00-00_{A}.ipynb", b"bob_alice")

    intake = gather(src, A, dest)

    assert set(intake.notebooks) == {"alice", "bob_alice", "carol"}, intake
    assert intake.notebooks["alice"].read_bytes() == b"alice"
    assert intake.notebooks["bob_alice"].read_bytes() == b"bob_alice"
    assert not intake.problems and not intake.flags, intake


# --------------------------------------------------------------------------- submission times

def exchange_timestamp(when: datetime.datetime, zone: str = "UTC") -> str:
    """timestamp.txt as `nbgrader submit` writes it: its exchange's own format and timezone."""
    from dateutil.tz import gettz
    from nbgrader.exchange.abc.exchange import Exchange

    return when.astimezone(gettz(zone)).strftime(Exchange.timestamp_format.default_value)


def test_timestamp_txt_of_nbgrader_layout(tmp_path: Path, dest: Path) -> None:
    """The issue: 'collect keeps timestamp.txt, but the grading command ignores it'."""
    src = tmp_path / "submitted"
    utc = datetime.UTC
    alice_at = datetime.datetime(2026, 1, 10, 12, 30, 5, 250_000, tzinfo=utc)
    bob_at = datetime.datetime(2026, 1, 15, 11, 0, tzinfo=utc)
    write(src / "alice" / A / f"{A}.ipynb", b"alice")
    stamp = exchange_timestamp(alice_at).encode()
    write(src / "alice" / A / "timestamp.txt", stamp)
    write(src / "bob" / A / f"{A}.ipynb", b"bob")
    write(src / "bob" / A / "timestamp.txt", exchange_timestamp(bob_at, "Europe/Berlin").encode())
    write(src / "carol" / A / f"{A}.ipynb", b"carol")  # handed in without one

    intake = gather(src, A, dest)

    assert intake == Intake(notebooks=staged(dest, "alice", "bob", "carol")), (
        "timestamp.txt must not be reported as an ignored file")
    assert intake.timestamps == {"alice": alice_at, "bob": bob_at}
    assert all(t.tzinfo is not None and t.utcoffset() == datetime.timedelta(0)
               for t in intake.timestamps.values())
    assert (dest / "alice" / A / "timestamp.txt").read_bytes() == stamp, "staged as collected"
    assert not (dest / "carol" / A / "timestamp.txt").exists()

    (src / "alice" / A / "timestamp.txt").unlink()
    again = gather(src, A, dest)
    assert "alice" not in again.timestamps
    assert not (dest / "alice" / A / "timestamp.txt").exists(), "a stale staged time was kept"


# The last two name a file as the zone: nbgrader's parse_utc hands that word to dateutil's
# gettz, which opens a path (a read error there, or a read of /proc/kmsg that never ends, stopped
# the whole class's run on main).
@pytest.mark.parametrize("content", [b"", b"next tuesday", b"2026-13-45 99:00:00", b"\xff\xfe",
                                     b"2026-01-10 " * 200, b"2026-12-01 00:00:00 /proc/self/mem",
                                     b"2026-12-01 00:00:00 ../../../../proc/self/mem"])
def test_malformed_timestamp_txt_is_a_note(tmp_path: Path, dest: Path, content: bytes) -> None:
    src = tmp_path / "submitted"
    write(src / "alice" / A / f"{A}.ipynb", b"alice")
    write(src / "alice" / A / "timestamp.txt", content)

    intake = gather(src, A, dest)

    assert intake.notebooks == staged(dest, "alice"), "the notebook is still graded"
    assert intake.timestamps == {} and intake.problems == {}
    [note] = intake.notes["alice"]
    assert note.startswith("timestamp.txt ") and "no submission time recorded" in note
    assert not (dest / "alice" / A / "timestamp.txt").exists()


def test_lms_attempt_time(tmp_path: Path, dest: Path) -> None:
    """Blackboard's attempt time, read by its exact format (nbgrader's parse_utc takes the
    last `-05` of 2016-01-05-03-04-05 for a zone and reads 08:04... as the time)."""
    src = tmp_path / "downloaded"
    write(src / LMS.format("bob", "2016-01-04-23-00-00", f"{A}.ipynb"), b"bob-1")
    write(src / LMS.format("bob", "2016-01-05-03-04-05", f"{A}.ipynb"), b"bob-2")
    write(src / LMS.format("eve", "2016-12-11-23-59-59", f"{A}.ipynb"), b"eve")

    intake = gather(src, A, dest)

    assert intake.timestamps == {
        "bob": datetime.datetime(2016, 1, 5, 3, 4, 5, tzinfo=datetime.UTC),
        "eve": datetime.datetime(2016, 12, 11, 23, 59, 59, tzinfo=datetime.UTC)}
    assert not (dest / "bob" / A / "timestamp.txt").exists(), "only notebooks are staged"

    archive = tmp_path / "download.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(LMS.format("bob", "2016-01-05-03-04-05", f"{A}.ipynb"), b"bob")
    assert gather(archive, A, tmp_path / "z").timestamps == {"bob": intake.timestamps["bob"]}


def test_custom_lms_regex_timestamp_group(tmp_path: Path, dest: Path) -> None:
    src = tmp_path / "canvas"
    write(src / f"alice--2026-01-10T12:00:00+01:00--{A}.ipynb", b"alice")
    write(src / f"bob--soon--{A}.ipynb", b"bob")
    regex = r"(?P<student_id>[a-z]+)--(?P<timestamp>[^-]+(?:-[^-]+)*?)--(?P<file_id>.+)"

    intake = gather(src, A, dest, lms_regex=regex)

    assert intake.notebooks == staged(dest, "alice", "bob")
    assert intake.timestamps == {"alice": datetime.datetime(2026, 1, 10, 11, tzinfo=datetime.UTC)}
    assert any("no submission time recorded" in n for n in intake.notes["bob"])
