"""``data fetch`` against a local HTTP server (127.0.0.1 only) serving tiny VOC-layout tars."""

import hashlib
import io
import socket
import tarfile
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from spp_detect.cli.main import cli
from spp_detect.datasets import fetch, open_dataset
from spp_detect.datasets.fetch import Archive, FetchError, FetchSpec, fetch_dataset, safe_extract
from tests.helpers import make_voc_tree

REQUIRED = ("Annotations", "JPEGImages", "ImageSets/Main/trainval.txt", "ImageSets/Main/test.txt")


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files`` with optional Range support and an optional dropped connection."""

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        data = srv.files.get(urllib.parse.unquote(self.path))
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        wanted = self.headers.get("Range")
        if wanted and srv.honor_range:
            start = int(wanted.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut_after is not None:
            # Promise the whole body, send part of it, hang up: a dropped connection.
            body, srv.cut_after = body[: srv.cut_after], None
            self.close_connection = True
        self.wfile.write(body)
        srv.sent.append((self.path, len(body)))

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.requests, srv.sent = {}, [], []
    srv.honor_range, srv.cut_after = True, None
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/base/"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def archives(tmp_path):
    """Two tars in VOC's layout: trainval (images 0-1) and test (images 2-3)."""
    root = make_voc_tree(tmp_path / "src", n_images=4, splits={"trainval": [0, 1], "test": [2, 3]})
    prefix = "VOCdevkit/VOC2007/"
    parts = {"trainval.tar": {}, "test.tar": {}}
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(root).as_posix()
        is_test = rel.endswith("test.txt") or p.stem in ("000002", "000003")
        parts["test.tar" if is_test else "trainval.tar"][prefix + rel] = p.read_bytes()
    return {name: _tar(members) for name, members in parts.items()}


def _serve(server, archives):
    for name, data in archives.items():
        server.files[f"/base/{name}"] = data


def _spec(base_url, archives, md5s=None):
    md5s = md5s or {n: hashlib.md5(d).hexdigest() for n, d in archives.items()}
    return FetchSpec(
        name="tiny",
        base_url=base_url,
        archives=tuple(Archive(n, md5s[n]) for n in ("trainval.tar", "test.tar")),
        target=("VOCdevkit", "VOC2007"),
        required=REQUIRED,
    )


def _fetch(spec, root, **kw):
    return fetch_dataset(spec, root, show_progress=False, retry_wait=0, **kw)


def test_fetch_downloads_verifies_unpacks_then_is_a_no_op(tmp_path, server, archives):
    _serve(server, archives)
    root = tmp_path / "data"
    result = _fetch(_spec(server.url, archives), root)
    assert result.target == root / "VOCdevkit" / "VOC2007" and not result.already_present
    assert open_dataset(str(result.target), "trainval").image_ids == ["000000", "000001"]
    assert open_dataset(str(result.target), "test").image_ids == ["000002", "000003"]
    assert [r[1] for r in server.requests] == [None, None]
    assert not (root / "downloads").exists()  # archives deleted, staging gone

    again = _fetch(_spec(server.url, archives), root)
    assert again.already_present and len(server.requests) == 2


def test_keep_archives_and_reuse_verified_downloads(tmp_path, server, archives):
    _serve(server, archives)
    root = tmp_path / "data"
    result = _fetch(_spec(server.url, archives), root, keep_archives=True)
    assert sorted(p.name for p in result.archives) == ["test.tar", "trainval.tar"]
    assert (root / "downloads" / "trainval.tar").read_bytes() == archives["trainval.tar"]
    n = len(server.requests)
    with pytest.raises(FetchError, match="--overwrite"):
        (root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "test.txt").unlink()
        _fetch(_spec(server.url, archives), root)
    result = _fetch(_spec(server.url, archives), root, overwrite=True)
    assert len(server.requests) == n  # unpacked again from the kept, verified archives
    assert open_dataset(str(result.target), "test").image_ids == ["000002", "000003"]


def test_checksum_mismatch_names_file_and_both_sums_and_deletes_it(tmp_path, server, archives):
    _serve(server, archives)
    root = tmp_path / "data"
    wrong = "0" * 32
    actual = hashlib.md5(archives["trainval.tar"]).hexdigest()
    spec = _spec(server.url, archives, {"trainval.tar": wrong, "test.tar": hashlib.md5(archives["test.tar"]).hexdigest()})
    with pytest.raises(FetchError) as info:
        _fetch(spec, root)
    msg = str(info.value)
    assert "trainval.tar" in msg and f"expected MD5 {wrong}" in msg and f"got {actual}" in msg
    assert not list((root / "downloads").glob("trainval.tar*"))
    assert not (root / "VOCdevkit").exists()


def test_resume_requests_only_the_missing_bytes(tmp_path, server, archives):
    _serve(server, archives)
    root = tmp_path / "data"
    data = archives["trainval.tar"]
    half = len(data) // 2
    (root / "downloads").mkdir(parents=True)
    (root / "downloads" / "trainval.tar.part").write_bytes(data[:half])
    result = _fetch(_spec(server.url, archives), root)
    # found by path: a handler records what it sent after the client has it, so the next
    # request may be recorded first
    assert dict(server.requests)["/base/trainval.tar"] == f"bytes={half}-"
    assert dict(server.sent)["/base/trainval.tar"] == len(data) - half
    assert len(open_dataset(str(result.target), "trainval")) == 2

    # a .part that is already whole: the server answers 416 and the file is verified as it is
    other = tmp_path / "other"
    (other / "downloads").mkdir(parents=True)
    (other / "downloads" / "trainval.tar.part").write_bytes(data)
    _fetch(_spec(server.url, archives), other)
    assert server.requests[-2] == ("/base/trainval.tar", f"bytes={len(data)}-")
    assert len(open_dataset(str(other / "VOCdevkit" / "VOC2007"), "trainval")) == 2


def test_server_ignoring_range_restarts_from_zero(tmp_path, server, archives):
    _serve(server, archives)
    server.honor_range = False
    root = tmp_path / "data"
    data = archives["trainval.tar"]
    (root / "downloads").mkdir(parents=True)
    # junk that would corrupt the archive if the full body were appended to it
    (root / "downloads" / "trainval.tar.part").write_bytes(b"\xff" * (len(data) // 2))
    result = _fetch(_spec(server.url, archives), root)
    assert dict(server.sent)["/base/trainval.tar"] == len(data)  # found by path: a handler records after sending
    assert len(open_dataset(str(result.target), "trainval")) == 2


def test_dropped_connection_is_resumed_automatically(tmp_path, server, archives):
    _serve(server, archives)
    server.cut_after = 1000
    root = tmp_path / "data"
    result = _fetch(_spec(server.url, archives), root, retries=2)
    tv = [r for r in server.requests if r[0] == "/base/trainval.tar"]
    assert tv == [("/base/trainval.tar", None), ("/base/trainval.tar", "bytes=1000-")]
    assert len(open_dataset(str(result.target), "trainval")) == 2

    server.cut_after = 1000
    with pytest.raises(FetchError, match="run the command again to resume"):
        _fetch(_spec(server.url, archives), tmp_path / "other", retries=0)
    assert (tmp_path / "other" / "downloads" / "trainval.tar.part").stat().st_size == 1000


def test_http_error_and_unreachable_server(tmp_path, server, archives):
    server.files["/base/trainval.tar"] = archives["trainval.tar"]  # test.tar missing: 404
    with pytest.raises(FetchError, match=r"/base/test.tar: HTTP error 404"):
        _fetch(_spec(server.url, archives), tmp_path / "data")
    assert not (tmp_path / "data" / "VOCdevkit").exists()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FetchError, match="cannot reach the server"):
        _fetch(_spec(f"http://127.0.0.1:{port}/", archives), tmp_path / "data2", retries=0)


def _evil_tar(path, kind):
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("VOCdevkit/VOC2007/ok.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"ok"))
        if kind == "dotdot":
            info = tarfile.TarInfo("../evil")
        elif kind == "absolute":
            info = tarfile.TarInfo(str(path.parent / "abs_evil"))
        else:
            info = tarfile.TarInfo("VOCdevkit/link")
            info.type = tarfile.SYMTYPE
            info.linkname = "../../evil"
        if kind != "symlink":
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        else:
            tar.addfile(info)


@pytest.mark.parametrize("kind, match", [
    ("dotdot", r"member '\.\./evil' would be written outside"),
    ("absolute", r"absolute path"),
    ("symlink", r"link pointing outside"),
])
def test_safe_extract_refuses_escaping_members(tmp_path, kind, match):
    archive = tmp_path / "evil.tar"
    _evil_tar(archive, kind)
    dest = tmp_path / "a" / "b"
    with pytest.raises(FetchError, match=match) as info:
        safe_extract(archive, dest, show_progress=False)
    assert "evil.tar" in str(info.value)
    assert not (tmp_path / "a" / "evil").exists() and not (tmp_path / "evil").exists()
    assert not (tmp_path / "abs_evil").exists() and not (dest / "VOCdevkit" / "link").exists()


def test_fetch_with_an_evil_archive_leaves_nothing_behind(tmp_path, server):
    evil = tmp_path / "evil.tar"
    _evil_tar(evil, "dotdot")
    server.files["/base/trainval.tar"] = evil.read_bytes()
    server.files["/base/test.tar"] = _tar({})
    archives = {n: server.files[f"/base/{n}"] for n in ("trainval.tar", "test.tar")}
    root = tmp_path / "data"
    with pytest.raises(FetchError, match="refusing to unpack"):
        _fetch(_spec(server.url, archives), root)
    assert not (root / "VOCdevkit").exists() and not (root / "evil").exists()
    assert not (root / "downloads" / ".tiny.unpack").exists()


def test_cli_fetch_with_mirror_and_no_op(tmp_path, server, archives, monkeypatch):
    _serve(server, archives)
    spec = _spec("http://127.0.0.1:9/unused/", archives)
    monkeypatch.setitem(fetch.DATASETS, "voc2007", spec)
    runner = CliRunner()
    root = tmp_path / "data"
    args = ["data", "fetch", "voc2007", "--data-root", str(root), "--mirror", server.url]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "ready at" in result.output and (root / "VOCdevkit" / "VOC2007" / "JPEGImages").is_dir()
    assert all(path.startswith("/base/") for path, _ in server.requests)
    again = runner.invoke(cli, args)
    assert again.exit_code == 0 and "already present" in again.output

    bad_spec = _spec(server.url, archives, {"trainval.tar": "1" * 32, "test.tar": "2" * 32})
    monkeypatch.setitem(fetch.DATASETS, "voc2007", bad_spec)
    bad = runner.invoke(cli, ["data", "fetch", "voc2007", "--data-root", str(tmp_path / "d2")])
    assert bad.exit_code == 1 and "checksum mismatch" in bad.output and "1" * 32 in bad.output
    assert runner.invoke(cli, ["data", "fetch", "voc2012"]).exit_code == 2
