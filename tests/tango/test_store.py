import threading
from pathlib import Path

import pytest

from tango.store import ArtifactExists, ArtifactMissing, InvalidKey, Store, validate_key


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store((tmp_path / "store").as_uri())


def test_write_once_then_read(store: Store):
    url = store.put_bytes("models/m1/card.json", b'{"a": 1}')
    assert url == f"{store.url}/models/m1/card.json"
    assert store.get_json("models/m1/card.json") == {"a": 1}
    with pytest.raises(ArtifactExists):
        store.put_bytes("models/m1/card.json", b"other")
    assert store.get_bytes("models/m1/card.json") == b'{"a": 1}'


def test_no_temp_files_left_and_listing_is_sorted(store: Store, tmp_path: Path):
    for name in ("b", "a", "c"):
        store.put_bytes(f"runs/r1/{name}.bin", name.encode())
    assert store.list("runs/r1") == ["runs/r1/a.bin", "runs/r1/b.bin", "runs/r1/c.bin"]
    assert not [p for p in (tmp_path / "store").rglob(".tmp-*")]
    assert store.list("runs/none") == []


def test_racing_writers_one_wins(store: Store):
    outcomes: list[str] = []

    def write(i: int) -> None:
        try:
            store.put_bytes("packages/p/onnxruntime.tar.gz", str(i).encode())
            outcomes.append("won")
        except ArtifactExists:
            outcomes.append("lost")

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("won") == 1 and outcomes.count("lost") == 7


@pytest.mark.parametrize("key", ["", "/etc/passwd", "../x", "a/../../x", "a//b", "a/./b", "a\\b", "a/.hidden",
                                 "a/b c", "x" * 600])
def test_keys_cannot_escape_the_store(store: Store, key: str, tmp_path: Path):
    with pytest.raises(InvalidKey):
        validate_key(key)
    with pytest.raises(InvalidKey):
        store.put_bytes(key, b"x")
    assert not (tmp_path / "x").exists()


def test_missing_artifact_and_url_round_trip(store: Store):
    with pytest.raises(ArtifactMissing):
        store.get_bytes("models/none/model.onnx")
    url = store.put_bytes("datasets/d/1/manifest.json", b"{}")
    assert store.key_from_url(url) == "datasets/d/1/manifest.json"
    with pytest.raises(InvalidKey):
        store.key_from_url("file:///etc/passwd")


def test_check_writes_reads_and_leaves_nothing_behind(store: Store, tmp_path: Path):
    store.check()
    store.check()
    assert [p for p in (tmp_path / "store").rglob("*") if p.is_file()] == []
