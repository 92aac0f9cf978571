"""The one atomic writer and the one name guard: umask, stale temporaries, locks, full disks, names."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edgedet.runtime import files
from edgedet.runtime.files import (
    DiskFullError,
    OutputError,
    OutputLock,
    OutputLockedError,
    PendingFile,
    UnsafeNameError,
    atomic_path,
    atomic_write_bytes,
    check_name,
    check_writable_dir,
    check_writable_file,
    clean_stale_temps,
    safe_child,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_files_are_readable_per_the_umask(tmp_path, monkeypatch):
    path = atomic_write_bytes(tmp_path / "model.onnx", b"graph")
    assert _mode(path) == 0o666 & ~files._UMASK
    monkeypatch.setattr(files, "_UMASK", 0o027)
    with atomic_path(tmp_path / "ckpt.pt") as tmp:
        tmp.write_bytes(b"weights")
    assert _mode(tmp_path / "ckpt.pt") == 0o640


def test_umask_is_read_without_changing_it():
    old = os.umask(0o077)
    try:
        assert files._read_umask() == 0o077
    finally:
        os.umask(old)


def test_a_failed_write_leaves_the_existing_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(ValueError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise ValueError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_enospc_raises_a_clear_error_and_renames_nothing(tmp_path):
    target = tmp_path / "out.onnx"
    target.write_bytes(b"old")
    with pytest.raises(DiskFullError, match=f"no space left on device writing {target}"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.onnx"]


def test_a_library_rewording_enospc_is_still_reported_as_disk_full(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "disk_is_full", lambda path: True)
    with pytest.raises(DiskFullError):
        with atomic_path(tmp_path / "last.pt"):
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos 64 vs 0")
    assert not list(tmp_path.iterdir())


def test_temporaries_carry_the_pid_and_stale_ones_are_removed(tmp_path):
    target = tmp_path / "out.mp4"
    dead = _dead_pid()
    stale = tmp_path / f".out.mp4.{dead}.0123abcd.mp4"
    alive = tmp_path / f".out.mp4.{os.getpid()}.0123abcd.mp4"
    other = tmp_path / f".other.mp4.{dead}.0123abcd.mp4"
    for p in (stale, alive, other):
        p.write_bytes(b"x")
    pending = PendingFile(target)
    assert pending.tmp.name.startswith(f".out.mp4.{os.getpid()}.") and pending.tmp.suffix == ".mp4"
    assert not stale.exists() and alive.exists() and other.exists()
    pending.discard()
    assert clean_stale_temps(tmp_path / "other.mp4") == [other]


def test_a_second_writer_of_the_same_output_is_refused(tmp_path):
    target = tmp_path / "out.jsonl"
    first = PendingFile(target, lock=True)
    with pytest.raises(OutputLockedError, match=rf"out.jsonl is being written by another edgedet run \(pid {os.getpid()}\)"):
        PendingFile(target, lock=True)
    first.commit()
    assert not (tmp_path / ".out.jsonl.lock").exists()
    PendingFile(target, lock=True).discard()  # free again
    lock = OutputLock(target)
    lock.release()


def test_a_lock_held_by_another_process(tmp_path):
    target = tmp_path / "out.jsonl"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "from edgedet.runtime.files import OutputLock\n"
                               f"lock = OutputLock({str(target)!r}); print('locked', flush=True); time.sleep(30)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLockedError, match=f"pid {holder.pid}"):
            OutputLock(target)
    finally:
        holder.kill()
        holder.wait()
    OutputLock(target).release()  # a dead holder's lock is gone with it


@pytest.mark.parametrize("name", ["", " ", "..", ".", "../../x", "/abs/x", "a/b", "a\\b", "x\0y", "-rf", ".hidden",
                                  "tab\tname"])
def test_names_that_are_not_plain_names_are_refused(tmp_path, name):
    with pytest.raises(UnsafeNameError):
        safe_child(tmp_path, name)


@pytest.mark.parametrize("name", ["yolov3", "model-v2.1", "my_model", "détecteur"])
def test_plain_names_pass(tmp_path, name):
    assert check_name(name) == name
    assert safe_child(tmp_path, name) == tmp_path / name


def test_unwritable_locations_fail_up_front(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(OutputError, match="afile"):
        check_writable_dir(afile / "out")
    with pytest.raises(OutputError, match="is a file"):
        check_writable_dir(afile)
    with pytest.raises(OutputError, match="out.json"):
        check_writable_file(afile / "out.json")
    with pytest.raises(OutputError, match="is a folder"):
        check_writable_file(tmp_path)
    assert check_writable_dir(tmp_path / "new" / "dir").is_dir()
    assert check_writable_file(tmp_path / "sub" / "x.json") == tmp_path / "sub" / "x.json"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["afile", "dir", "new", "sub"]


def test_a_real_full_disk(small_tmpfs):
    disk = small_tmpfs("256k")
    target = disk / "big.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(DiskFullError, match="no space left on device"):
        atomic_write_bytes(target, b"x" * (1 << 20))
    assert target.read_bytes() == b"old"
    assert [p.name for p in disk.iterdir()] == ["big.bin"]
