"""Masks from .npz / .safetensors shards: same masks as in memory, bounded memory, errors."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ltp_core import compute_masks, load_masks
from ltp_core.cli import main
from ltp_core.io import load_state
from ltp_core.shards import masks_from_shards, open_shards, save_packed_masks

SAFETENSORS_CODES = {np.dtype("<f4"): "F32", np.dtype("<f2"): "F16", np.dtype("<f8"): "F64"}


def write_safetensors(
    path: Path, tensors: dict[str, np.ndarray], bfloat16: frozenset[str] = frozenset()
) -> None:
    """Minimal safetensors writer (header JSON + raw little-endian data)."""
    header: dict[str, object] = {}
    blobs = []
    offset = 0
    for name, array in tensors.items():
        if name in bfloat16:
            data = (np.asarray(array, np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
            code = "BF16"
        else:
            data = np.ascontiguousarray(array).tobytes()
            code = SAFETENSORS_CODES[array.dtype]
        header[name] = {
            "dtype": code,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    encoded = json.dumps(header).encode()
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(encoded)))
        file.write(encoded)
        for blob in blobs:
            file.write(blob)


def weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "stem": rng.normal(size=(64, 16)).astype(np.float32),
        "block.0.w": rng.normal(size=(16, 48)).astype(np.float32),
        "block.0.bias": rng.normal(size=(48,)).astype(np.float32),
        "block.1.w": rng.normal(size=(48, 16)).astype(np.float32),
    }


@pytest.mark.parametrize(
    "strategy",
    [
        "large_final_global",
        "large_final",
        "random_global",
        "movement_global",
        "large_final_same_sign",
    ],
)
def test_shard_masks_equal_in_memory_masks(
    tmp_path: Path, strategy: str, selection_path: str
) -> None:
    trained, initial = weights(0), weights(1)
    write_safetensors(tmp_path / "a.safetensors", {k: trained[k] for k in ("stem", "block.0.w")})
    np.savez(tmp_path / "b.npz", **{k: trained[k] for k in ("block.0.bias", "block.1.w")})
    write_safetensors(tmp_path / "init.safetensors", initial)
    result = masks_from_shards(
        [tmp_path / "a.safetensors", tmp_path / "b.npz"],
        strategy,
        0.3,
        initial=[tmp_path / "init.safetensors"],
        seed=4,
    )
    names = ["stem", "block.0.w", "block.1.w"]  # 1-d bias excluded by default
    assert result.names == names
    expected = compute_masks(
        strategy,
        0.3,
        trained=[trained[n] for n in names],
        initial=[initial[n] for n in names],
        seed=4,
    )
    for got, want in zip(result.unpacked(), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert result.report.kept == sum(int(m.sum()) for m in expected)


def test_bfloat16_and_float16_shards(tmp_path: Path) -> None:
    w = weights()
    write_safetensors(
        tmp_path / "w.safetensors",
        {"stem": w["stem"], "block.0.w": w["block.0.w"].astype(np.float16)},
        bfloat16=frozenset({"stem"}),
    )
    result = masks_from_shards([tmp_path / "w.safetensors"], "large_final_global", 0.5)
    assert result.report.kept == (64 * 16 + 16 * 48) // 2 + (64 * 16 + 16 * 48) % 2


def test_cli_writes_portable_mask_file_and_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    w = weights()
    np.savez(tmp_path / "w.npz", **w)
    code = main(
        [
            "mask",
            str(tmp_path / "w.npz"),
            "--fraction",
            "0.25",
            "--include",
            r"\.w$",
            "--out",
            str(tmp_path / "masks.npz"),
            "--report",
            str(tmp_path / "r.md"),
        ]
    )
    assert code == 0
    masks, names = load_masks(tmp_path / "masks.npz")
    assert names == ["block.0.w", "block.1.w"]
    assert sum(int((~m).sum()) for m in masks) == int(0.25 * 2 * 16 * 48)
    assert "| block.0.w |" in (tmp_path / "r.md").read_text()
    assert "masks written to" in capsys.readouterr().out


def test_errors(tmp_path: Path) -> None:
    w = weights()
    np.savez_compressed(tmp_path / "c.npz", **w)
    with pytest.raises(ValueError, match="compressed"):
        open_shards([tmp_path / "c.npz"])
    write_safetensors(tmp_path / "t.safetensors", w)
    data = (tmp_path / "t.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-100])
    with pytest.raises(ValueError, match="truncated"):
        masks_from_shards([tmp_path / "cut.safetensors"], "large_final_global", 0.2)
    np.savez(tmp_path / "dup.npz", stem=w["stem"])
    with pytest.raises(ValueError, match="unique"):
        open_shards([tmp_path / "t.safetensors", tmp_path / "dup.npz"])
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"\.safetensors or \.npz"):
        open_shards([tmp_path / "w.bin"])
    with pytest.raises(ValueError, match="initial"):
        masks_from_shards([tmp_path / "t.safetensors"], "movement", 0.2)
    with pytest.raises(ValueError, match="cannot stream"):
        masks_from_shards(
            [tmp_path / "t.safetensors"],
            "large_init_large_final",
            0.2,
            initial=[tmp_path / "t.safetensors"],
        )
    with pytest.raises(ValueError, match="No prunable tensors"):
        masks_from_shards([tmp_path / "t.safetensors"], "large_final", 0.2, include="nothing")
    with pytest.raises(SystemExit, match="ltp: error"):
        main(
            [
                "mask",
                str(tmp_path / "missing.npz"),
                "--fraction",
                "0.2",
                "--out",
                str(tmp_path / "m.npz"),
            ]
        )


def test_packed_round_trip(tmp_path: Path) -> None:
    np.savez(tmp_path / "w.npz", **weights())
    result = masks_from_shards([tmp_path / "w.npz"], "large_final", 0.4)
    save_packed_masks(tmp_path / "m.npz", result)
    masks, _ = load_masks(tmp_path / "m.npz")
    for a, b in zip(masks, result.unpacked(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_gigabyte_of_weights_under_300_mb_extra_resident_memory(tmp_path: Path) -> None:
    """>= 1 GiB of float32 weights in 4 shards; peak RSS growth must stay under 300 MB."""
    rng = np.random.default_rng(0)
    per_shard = 2**28 // 4  # 4 shards x 256 MiB = 1 GiB (268M weights)
    rows = per_shard // 4096
    paths = []
    for s in range(4):
        path = tmp_path / f"shard_{s}.safetensors"
        header = json.dumps(
            {
                f"layer{s}.w": {
                    "dtype": "F32",
                    "shape": [rows, 4096],
                    "data_offsets": [0, rows * 4096 * 4],
                }
            }
        ).encode()
        with open(path, "wb") as file:
            file.write(struct.pack("<Q", len(header)))
            file.write(header)
            for _ in range(rows // 2048):
                file.write(rng.standard_normal((2048, 4096), dtype=np.float32).tobytes())
        paths.append(str(path))
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from ltp_core.shards import masks_from_shards, save_packed_masks
        from ltp_core.compute import count_to_prune
        def status_kb(field):
            with open("/proc/self/status") as f:
                return next(int(l.split()[1]) for l in f if l.startswith(field))
        base = status_kb("VmRSS:")
        result = masks_from_shards({paths!r}, "large_final_global", 0.2)
        save_packed_masks({str(tmp_path / "m.npz")!r}, result)
        # VmHWM is this image's peak RSS (ru_maxrss would include the parent's, kept across exec)
        peak = status_kb("VmHWM:")
        total = sum(int(np.prod(s)) for s in result.shapes)
        assert total >= 2**28, total
        assert total - result.report.kept == count_to_prune(0.2, total)
        print((peak - base) / 1024)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    extra_mb = float(out.stdout.strip().splitlines()[-1])
    print(f"extra resident memory: {extra_mb:.0f} MB")
    assert extra_mb < 300, f"extra resident memory {extra_mb:.0f} MB"


# -- corrupt shards are refused, never read ------------------------------------------------------


def _raw_safetensors(path: Path, header: object, body: bytes) -> Path:
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + body)
    return path


_BODY = np.arange(32, dtype="<f4").tobytes()  # 128 bytes
_GOOD = {
    "a": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]},
    "b": {"dtype": "F32", "shape": [4, 4], "data_offsets": [64, 128]},
}
BAD_HEADERS = [
    (
        "shape disagrees with offsets",
        {**_GOOD, "a": {"dtype": "F32", "shape": [4, 8], "data_offsets": [0, 64]}},
        _BODY,
        r"tensor 'a': shape \[4, 8\] of F32 needs 128 bytes but data_offsets span 64",
    ),
    (
        "overlapping offsets",
        {
            "a": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]},
            "b": {"dtype": "F32", "shape": [2, 8], "data_offsets": [0, 64]},
            "c": {"dtype": "F32", "shape": [16], "data_offsets": [64, 128]},
        },
        _BODY,
        "overlaps the previous tensor",
    ),
    (
        "10M weights over a 16-byte body",
        {"a": {"dtype": "F32", "shape": [10_000_000], "data_offsets": [0, 40_000_000]}},
        _BODY[:16],
        "truncated",
    ),
    ("a JSON list", [1, 2], _BODY, "the header is a JSON list, not an object"),
    (
        "no data_offsets",
        {**_GOOD, "b": {"dtype": "F32", "shape": [4, 4]}},
        _BODY,
        r"tensor 'b': 'data_offsets' must be \[begin, end\]",
    ),
    (
        "a string shape",
        {**_GOOD, "b": {"dtype": "F32", "shape": "4x4", "data_offsets": [64, 128]}},
        _BODY,
        r"tensor 'b': 'shape' must be a list of integers >= 0, got '4x4'",
    ),
    (
        "an unknown dtype",
        {**_GOOD, "b": {"dtype": "F17", "shape": [4, 4], "data_offsets": [64, 128]}},
        _BODY,
        "unknown dtype 'F17'",
    ),
    (
        "a gap between tensors",
        {**_GOOD, "b": {"dtype": "F32", "shape": [3, 4], "data_offsets": [80, 128]}},
        _BODY,
        "leaves a gap",
    ),
    ("trailing bytes", _GOOD, _BODY + b"\0" * 8, "trailing bytes"),
]


@pytest.mark.parametrize(
    ("header", "body", "problem"),
    [case[1:] for case in BAD_HEADERS],
    ids=[case[0] for case in BAD_HEADERS],
)
def test_corrupt_safetensors_headers_are_refused(
    tmp_path: Path, header: object, body: bytes, problem: str
) -> None:
    path = _raw_safetensors(tmp_path / "bad.safetensors", header, body)
    with pytest.raises(ValueError, match=problem) as info:
        masks_from_shards([path], "large_final_global", 0.5, include=".")
    assert str(path) in str(info.value) and "Received: path=" in str(info.value)
    # the maintained safetensors package refuses the same files
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    with pytest.raises(Exception):  # noqa: B017 - its own error types
        safetensors_numpy.load_file(str(path))


def test_a_valid_hand_written_header_is_accepted_like_safetensors_does(tmp_path: Path) -> None:
    path = _raw_safetensors(tmp_path / "good.safetensors", _GOOD, _BODY)
    result = masks_from_shards([path], "large_final_global", 0.5)
    assert result.names == ["a", "b"] and result.report.kept == 16
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    loaded = safetensors_numpy.load_file(str(path))
    np.testing.assert_array_equal(loaded["b"].reshape(-1), np.arange(16, 32))


def test_npz_shards_check_member_crcs_while_streaming(tmp_path: Path, selection_path: str) -> None:
    w = weights()
    np.savez(tmp_path / "w.npz", **w)
    data = bytearray((tmp_path / "w.npz").read_bytes())
    import zipfile

    with zipfile.ZipFile(tmp_path / "w.npz") as archive:
        info = archive.getinfo("block.1.w.npy")
    end = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.file_size
    data[end - 3] ^= 0x01  # a low mantissa bit: the value stays finite and plausible
    (tmp_path / "flipped.npz").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"flipped\.npz is corrupt: member 'block\.1\.w'.*CRC"):
        masks_from_shards([tmp_path / "flipped.npz"], "large_final_global", 0.3)
    # the intact file streams through the same path and gives the in-memory masks
    result = masks_from_shards([tmp_path / "w.npz"], "large_final_global", 0.3)
    names = ["stem", "block.0.w", "block.1.w"]
    expected = compute_masks("large_final_global", 0.3, trained=[w[n] for n in names])
    for got, want in zip(result.unpacked(), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_npz_shards_refuse_npy_foreign_members_and_wrong_sizes(tmp_path: Path) -> None:
    import zipfile

    np.save(tmp_path / "w.npy", np.ones((4, 4), np.float32))
    (tmp_path / "w.npy").rename(tmp_path / "w.npz")
    with pytest.raises(ValueError, match=r"w\.npz.*single-array \.npy file"):
        open_shards([tmp_path / "w.npz"])
    np.savez(tmp_path / "ok.npz", a=np.ones((4, 4), np.float32))
    with zipfile.ZipFile(tmp_path / "ok.npz") as source:
        member = source.read("a.npy")
    with zipfile.ZipFile(tmp_path / "foreign.npz", "w") as archive:
        archive.writestr("a.npy", member)
        archive.writestr("README.txt", b"hello")
    with pytest.raises(ValueError, match=r"foreign\.npz.*member 'README\.txt' is not a \.npy"):
        open_shards([tmp_path / "foreign.npz"])
    with zipfile.ZipFile(tmp_path / "short.npz", "w") as archive:
        archive.writestr("a.npy", member[:-16])  # header says 4x4, 4 values are missing
    with pytest.raises(ValueError, match=r"short\.npz.*member 'a'.*needs 64 bytes.*48"):
        open_shards([tmp_path / "short.npz"])
    with zipfile.ZipFile(tmp_path / "junk.npz", "w") as archive:
        archive.writestr("a.npy", b"not an array at all")
    with pytest.raises(ValueError, match=r"junk\.npz.*member 'a' is not a valid \.npy"):
        open_shards([tmp_path / "junk.npz"])


def test_disk_array_reads_slices_and_sorted_gathers(tmp_path: Path) -> None:
    w = np.arange(100_000, dtype=np.float32).reshape(100, 1000)
    np.savez(tmp_path / "w.npz", w=w)
    (disk,) = open_shards([tmp_path / "w.npz"])
    np.testing.assert_array_equal(disk[10:20], w.reshape(-1)[10:20])
    index = np.array([0, 1, 2, 5000, 5001, 99_999])  # runs far apart: one read each
    np.testing.assert_array_equal(disk[index], w.reshape(-1)[index])
    with pytest.raises(IndexError, match="sorted indices"):
        disk[np.array([5, 3])]
    with pytest.raises(IndexError, match=r"\[0, 100000\)"):
        disk[np.array([100_000])]
    disk.close()


def collapsing_weights() -> dict[str, np.ndarray]:
    """Three tensors, one of them 1000x smaller: a global selection at 0.9 empties it."""
    rng = np.random.default_rng(3)
    return {
        "a.w": rng.normal(size=(24, 20)).astype(np.float32),
        "small.w": (rng.normal(size=(10, 9)) * 1e-3).astype(np.float32),
        "b.w": rng.normal(size=(20, 30)).astype(np.float32),
    }


@pytest.mark.parametrize("strategy", ["large_final_global", "random_erk", "random_global"])
def test_shard_masks_with_min_layer_density_equal_in_memory_masks(
    tmp_path: Path, strategy: str, selection_path: str
) -> None:
    w = collapsing_weights()
    write_safetensors(tmp_path / "w.safetensors", w)
    result = masks_from_shards(
        [tmp_path / "w.safetensors"], strategy, 0.9, seed=2, min_layer_density=0.05
    )
    expected = compute_masks(
        strategy, 0.9, trained=list(w.values()), seed=2, min_layer_density=0.05
    )
    got = result.unpacked()
    for mask, want in zip(got, expected, strict=True):
        np.testing.assert_array_equal(mask, want)
    total = sum(a.size for a in w.values())
    assert result.report.kept == total - int(0.9 * total)  # the exact global count
    for mask, array in zip(got, w.values(), strict=True):
        assert mask.sum() >= int(np.ceil(0.05 * array.size))
    if strategy == "large_final_global":  # without the floor, the small tensor is emptied
        plain = masks_from_shards([tmp_path / "w.safetensors"], strategy, 0.9, seed=2)
        assert plain.unpacked()[1].sum() == 0


def test_shard_min_layer_density_errors_before_reading(tmp_path: Path) -> None:
    w = collapsing_weights()
    write_safetensors(tmp_path / "w.safetensors", w)
    shards = [tmp_path / "w.safetensors"]
    with pytest.raises(ValueError, match=r"cannot be met.*min_layer_density=0.2"):
        masks_from_shards(shards, "large_final_global", 0.9, min_layer_density=0.2)
    with pytest.raises(ValueError, match=r"Received: min_layer_density=1.0"):
        masks_from_shards(shards, "large_final_global", 0.5, min_layer_density=1.0)
    with pytest.raises(ValueError, match="cannot be met"):  # layer scope: its own count
        masks_from_shards(shards, "large_final", 0.9, min_layer_density=0.2)


def test_cli_mask_min_layer_density(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    w = collapsing_weights()
    np.savez(tmp_path / "w.npz", **w)
    out = tmp_path / "masks.npz"
    argv = ["mask", str(tmp_path / "w.npz"), "--fraction", "0.9", "--out", str(out)]
    assert main([*argv, "--min-layer-density", "0.05"]) == 0
    masks, names = load_masks(out)
    assert names == list(w) and min(int(m.sum()) for m in masks) == 5  # ceil(0.05 * 90)
    assert load_state(out)["min_layer_density"] == 0.05
    for bad, says in [
        (["--strategy", "large_final"], "applies to global strategies, not 'large_final'"),
        (["--min-layer-density", "1"], "expected a number in [0, 1)"),
    ]:
        with pytest.raises(SystemExit) as info:
            main([*argv, "--min-layer-density", "0.05", *bad])
        assert info.value.code == 2
        assert says in capsys.readouterr().err
    with pytest.raises(SystemExit, match=r"ltp: error: `min_layer_density` cannot be met"):
        main([*argv, "--min-layer-density", "0.5"])


def _read_ahead_threads() -> list[str]:
    import threading

    return [t.name for t in threading.enumerate() if t.name.startswith("ltp-read-ahead")]


def test_read_ahead_keeps_chunks_intact_across_abandoned_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scores that are views of the read buffers (an identity criterion on float32) stay
    intact while the next chunk is read ahead, and a pass given up half-way (its read-ahead
    still pending) leaves the next pass correct; no worker thread outlives the call."""
    from ltp_core import Strategy, selection

    w = weights()
    names = ["stem", "block.0.w", "block.1.w"]
    identity = Strategy.from_score_fn("identity", lambda x: x, scope="global", elementwise=True)
    expected = compute_masks(identity, 0.3, trained=[w[n] for n in names], seed=2)
    write_safetensors(tmp_path / "w.safetensors", w)
    for name, value in [
        ("PARTITION_MAX", 0),
        ("SMALL_ALIVE", 8),
        ("MIN_SAMPLE", 8),
        ("SAMPLE_SIZE", 64),
        ("CHUNK_SIZE", 16),
    ]:
        monkeypatch.setattr(selection, name, value)
    fused_pass = selection._fused_pass
    budgets: list[int | None] = []

    def give_up_first(*args: object, **kwargs: object) -> object:
        budgets.append(None)
        if len(budgets) == 1:  # budget 0: stops at the first chunk holding a candidate
            return fused_pass(*args[:5], 0, *args[6:], **kwargs)  # type: ignore[arg-type]
        return fused_pass(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(selection, "_fused_pass", give_up_first)
    from concurrent.futures import wait

    from ltp_core import shards

    chunk = shards._DiskScores.chunk

    def chunk_read_ahead_done(self: shards._DiskScores, start: int, stop: int) -> object:
        result = chunk(self, start, stop)
        if self._ahead is not None:  # the next chunk is read before this one is used
            wait([self._ahead[2]])
        return result

    monkeypatch.setattr(shards._DiskScores, "chunk", chunk_read_ahead_done)
    result = masks_from_shards([tmp_path / "w.safetensors"], identity, 0.3, seed=2)
    assert len(budgets) >= 2
    for got, want in zip(result.unpacked(), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert _read_ahead_threads() == []


def test_a_corrupt_member_found_by_the_read_ahead_is_raised_and_no_thread_remains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ltp_core import selection

    monkeypatch.setattr(selection, "CHUNK_SIZE", 16)  # many chunks: later ones are read ahead
    import zipfile

    np.savez(tmp_path / "w.npz", **weights())
    data = bytearray((tmp_path / "w.npz").read_bytes())
    with zipfile.ZipFile(tmp_path / "w.npz") as archive:
        info = archive.getinfo("block.1.w.npy")
    end = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.file_size
    data[end - 3] ^= 0x01  # in the member's last chunk
    (tmp_path / "bad.npz").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"bad\.npz is corrupt: member 'block\.1\.w'.*CRC-32"):
        masks_from_shards(
            [tmp_path / "bad.npz"], "movement_global", 0.3, initial=[tmp_path / "w.npz"]
        )
    assert _read_ahead_threads() == []


@pytest.mark.parametrize("numpy_1", [False, True])
def test_count_set_bits_matches_unpacked_counts(
    numpy_1: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ltp_core.selection import count_set_bits

    if numpy_1:  # the table used before np.bitwise_count (NumPy < 2)
        monkeypatch.delattr(np, "bitwise_count", raising=False)
    rng = np.random.default_rng(0)
    for size in (0, 1, 7, 8, 9, 63, 64, 1000, 4099):
        packed = rng.integers(0, 256, size, dtype=np.uint8)
        assert count_set_bits(packed, chunk=64) == int(np.unpackbits(packed).sum()), size


def test_sampled_runs_see_every_column_of_a_tensor_with_a_column_trend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weights whose scale grows along each row (a feature-scale trend): the sampled runs of
    neighbours must cover every column, or the bracket is biased and a second pass is needed."""
    from ltp_core import selection

    rng = np.random.default_rng(0)
    rows, cols = 4096, 4096
    scale = np.exp(np.linspace(-1.5, 1.5, cols, dtype=np.float32))
    w = {"w": rng.standard_normal((rows, cols), dtype=np.float32) * scale}
    write_safetensors(tmp_path / "w.safetensors", w)
    fused_pass = selection._fused_pass
    passes: list[bool] = []

    def counting(*args: object, **kwargs: object) -> object:
        result = fused_pass(*args, **kwargs)  # type: ignore[arg-type]
        passes.append(result is not None)
        return result

    monkeypatch.setattr(selection, "_fused_pass", counting)
    for seed, fraction in enumerate([0.2, 0.5, 0.8]):
        result = masks_from_shards(
            [tmp_path / "w.safetensors"], "large_final_global", fraction, seed=seed
        )
        assert result.report.kept == w["w"].size - int(fraction * w["w"].size)
    assert passes == [True] * 3, passes  # one pass each: the first bracket held


def test_design_effect_of_runs_of_alike_neighbours() -> None:
    from ltp_core.selection import _design_effect

    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(4096), 16)
    independent = rng.random(groups.size)
    assert _design_effect(independent, groups, 0.3) == pytest.approx(1.0, abs=0.1)
    assert _design_effect(independent, None, 0.3) == 1.0
    # each run shares a scale: the runs' counts vary far more than binomial counts
    alike = rng.random(groups.size) * np.exp(2 * rng.standard_normal(4096))[groups]
    assert _design_effect(alike, groups, 0.3) > 4.0


def test_one_usable_core_reads_without_a_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ltp_core import selection, shards

    def no_thread(*args: object, **kwargs: object) -> None:
        raise AssertionError("no worker thread with one usable core")

    monkeypatch.setattr(shards, "_usable_cores", lambda: 1)
    monkeypatch.setattr(shards, "ThreadPoolExecutor", no_thread)
    monkeypatch.setattr(selection, "CHUNK_SIZE", 16)
    w = weights()
    np.savez(tmp_path / "w.npz", **w)
    names = ["stem", "block.0.w", "block.1.w"]
    result = masks_from_shards([tmp_path / "w.npz"], "large_final_global", 0.3, seed=1)
    expected = compute_masks("large_final_global", 0.3, trained=[w[n] for n in names], seed=1)
    for got, want in zip(result.unpacked(), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def _ties_and_signed_zeros(dtype: type[np.floating], seed: int = 0) -> dict[str, np.ndarray]:
    """Weights whose magnitudes tie often: +-0.0, the same value with both signs, repeats."""
    rng = np.random.default_rng(seed)
    levels = np.array([-0.0, 0.0, 0.25, -0.25, 0.5, -0.5, 1.5, -1.5, 3.0], dtype=dtype)
    return {
        "a.w": rng.choice(levels, size=(24, 40)).astype(dtype),
        "b.w": (rng.normal(size=(40, 24)) * rng.integers(0, 2, size=(40, 24))).astype(dtype),
    }


@pytest.mark.parametrize("dtypes", [("<f4", "<f4"), ("<f8", "<f8"), ("<f4", "<f8")])
@pytest.mark.parametrize("strategy", ["large_final_global", "movement_global", "large_final"])
def test_float_bit_keys_rank_exactly_like_magnitudes(
    tmp_path: Path, dtypes: tuple[str, str], strategy: str, selection_path: str
) -> None:
    """The streamed pass ranks |w| (or |w - w0|) by the float bits with the sign dropped:
    ties at +-0.0 and at +-x, float64 keys, and mixed float32/float64 scopes (compared as
    scores) give the in-memory masks exactly."""
    trained = {
        name: w.astype(dtype)
        for (name, w), dtype in zip(_ties_and_signed_zeros(np.float64).items(), dtypes, strict=True)
    }
    initial = {n: (w * 0.5 + np.sign(w)).astype(w.dtype) for n, w in trained.items()}
    write_safetensors(tmp_path / "a.safetensors", {"a.w": trained["a.w"]})
    np.savez(tmp_path / "b.npz", **{"b.w": trained["b.w"]})  # keys made on the calling thread
    write_safetensors(tmp_path / "init.safetensors", initial)
    for seed, fraction in [(0, 0.3), (1, 0.75)]:
        result = masks_from_shards(
            [tmp_path / "a.safetensors", tmp_path / "b.npz"],
            strategy,
            fraction,
            initial=[tmp_path / "init.safetensors"],
            seed=seed,
        )
        expected = compute_masks(
            strategy,
            fraction,
            trained=list(trained.values()),
            initial=list(initial.values()),
            seed=seed,
        )
        for got, want in zip(result.unpacked(), expected, strict=True):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_the_streamed_pass_refuses_non_finite_weights_the_sample_missed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: float, suffix: str
) -> None:
    """A NaN or infinite weight outside the sample is found by the pass itself (on the read-ahead
    thread for safetensors, on the calling thread for npz), with the usual error."""
    from ltp_core import selection

    monkeypatch.setattr(selection, "CHUNK_SIZE", 16)
    monkeypatch.setattr(selection, "PARTITION_MAX", 0)
    # no sample: the pass runs unbracketed over every chunk
    monkeypatch.setattr(selection, "_sample_alive_scores", lambda *args: (np.empty(0), None))
    for dtype in (np.float32, np.float64):
        w = {n: a.astype(dtype) for n, a in weights().items()}
        w["block.1.w"][40 % 48, 7] = value
        path = tmp_path / f"w{suffix}"
        if suffix == ".npz":
            np.savez(path, **w)
        else:
            write_safetensors(path, w)
        with pytest.raises(ValueError, match=r"Scores for block\.1\.w contain NaN or infinite"):
            masks_from_shards([path], "large_final_global", 0.3)
        assert _read_ahead_threads() == []


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
@pytest.mark.parametrize("bad_chunk", [None, 0, 1, 4])
def test_two_threads_select_alternate_chunks_of_a_tensor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad_chunk: int | None, suffix: str
) -> None:
    """Chunks of one-input criteria are read and selected by the calling thread and the worker
    in turn: the same masks as in memory, also after a pass given up half-way (both threads'
    chunks in flight), npz CRC-32s added in order; a NaN in either thread's chunk is the usual
    error."""
    from ltp_core import selection

    for name, value in [
        ("PARTITION_MAX", 0),
        ("SMALL_ALIVE", 8),
        ("MIN_SAMPLE", 8),
        ("SAMPLE_SIZE", 64),
        ("CHUNK_SIZE", 16),  # 64-entry chunks from disk: 16 chunks in stem, 12 in block.0.w
    ]:
        monkeypatch.setattr(selection, name, value)
    calls: list[object] = []
    parallel = selection._parallel_keyed_pass

    def spy(*args: object, **kwargs: object) -> bool:
        calls.append(args[0])
        return parallel(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(selection, "_parallel_keyed_pass", spy)
    fused_pass = selection._fused_pass
    passes: list[None] = []

    def give_up_first(*args: object, **kwargs: object) -> object:
        passes.append(None)
        if len(passes) == 1:  # budget 0: stops at the first pair of chunks with a candidate
            return fused_pass(*args[:5], 0, *args[6:], **kwargs)  # type: ignore[arg-type]
        return fused_pass(*args, **kwargs)  # type: ignore[arg-type]

    if bad_chunk is None:
        monkeypatch.setattr(selection, "_fused_pass", give_up_first)
    w = weights(3)
    w["block.1.w"] = w["block.1.w"][:, :13]  # 624 entries: 9 chunks, the last one short
    names = ["stem", "block.0.w", "block.1.w"]
    if bad_chunk is not None:  # no sample to find it: the pass does
        w["block.0.w"].reshape(-1)[bad_chunk * 64 + 5] = np.nan
        monkeypatch.setattr(selection, "_sample_alive_scores", lambda *a: (np.empty(0), None))
    path = tmp_path / f"w{suffix}"
    if suffix == ".npz":
        np.savez(path, **w)
    else:
        write_safetensors(path, w)
    if bad_chunk is not None:
        with pytest.raises(ValueError, match=r"Scores for block\.0\.w contain NaN or infinite"):
            masks_from_shards([path], "large_final_global", 0.4, seed=5)
    else:
        result = masks_from_shards([path], "large_final_global", 0.4, seed=5)
        expected = compute_masks("large_final_global", 0.4, trained=[w[n] for n in names], seed=5)
        for got, want in zip(result.unpacked(), expected, strict=True):
            np.testing.assert_array_equal(got, want)
        assert len(passes) >= 2 and len(calls) >= 4  # an abandoned pass, then a whole one
    assert _read_ahead_threads() == []


@pytest.mark.parametrize("member", ["stem", "block.0.bias", "block.1.w"])
@pytest.mark.parametrize("where", [0, 64 * 4 + 3, 64 * 4 * 5 + 1, -3])
def test_a_flipped_bit_in_any_chunk_is_found_when_two_threads_read_a_member(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, member: str, where: int
) -> None:
    """Each thread checksums the chunks it reads; the parts are combined in order, so a flipped
    bit in the calling thread's chunk, the worker's, the short last one or a one-chunk member
    is the usual error."""
    import zipfile

    from ltp_core import selection

    monkeypatch.setattr(selection, "CHUNK_SIZE", 16)  # chunks of 64 entries, 256 bytes
    w = weights(2)
    w["block.0.bias"] = w["block.0.bias"].reshape(6, 8)  # 2-d: selected; one chunk
    np.savez(tmp_path / "w.npz", **w)
    data = bytearray((tmp_path / "w.npz").read_bytes())
    with zipfile.ZipFile(tmp_path / "w.npz") as archive:
        info = archive.getinfo(f"{member}.npy")
    name_length, extra_length = struct.unpack_from("<HH", data, info.header_offset + 26)
    end = info.header_offset + 30 + name_length + extra_length + info.file_size
    data_start = end - w[member].nbytes
    at = data_start + where if where >= 0 else end + where
    data[min(at, end - 1)] ^= 0x10
    (tmp_path / "bad.npz").write_bytes(bytes(data))
    pattern = rf"bad\.npz is corrupt: member {re.escape(repr(member))}.*CRC-32"
    with pytest.raises(ValueError, match=pattern):
        masks_from_shards([tmp_path / "bad.npz"], "large_final_global", 0.3)
    assert _read_ahead_threads() == []
    result = masks_from_shards([tmp_path / "w.npz"], "large_final_global", 0.3)  # intact: fine
    assert result.report.kept == sum(m.size for m in w.values()) - int(
        0.3 * sum(m.size for m in w.values())
    )


def test_many_tensors_share_the_read_buffers(tmp_path: Path) -> None:
    """80 tensors of 3 MiB (two chunks each) in trained and initial shards: the read buffers are
    shared across tensors, so the extra resident memory does not grow with their number (one
    pair of 2 MiB buffers per tensor and role was 330 MB here)."""
    rng = np.random.default_rng(0)
    rows, count = 192, 40  # 192 x 4096 float32 = 3 MiB per tensor
    for name in ("trained", "initial"):
        header = {
            f"l{i}.w": {
                "dtype": "F32",
                "shape": [rows, 4096],
                "data_offsets": [i * rows * 16384, (i + 1) * rows * 16384],
            }
            for i in range(count)
        }
        encoded = json.dumps(header).encode()
        with open(tmp_path / f"{name}.safetensors", "wb") as file:
            file.write(struct.pack("<Q", len(encoded)) + encoded)
            for _ in range(count):
                file.write(rng.standard_normal((rows, 4096), dtype=np.float32).tobytes())
    trained, initial = str(tmp_path / "trained.safetensors"), str(tmp_path / "initial.safetensors")
    script = textwrap.dedent(f"""
        from ltp_core.shards import masks_from_shards
        def status_kb(field):
            with open("/proc/self/status") as f:
                return next(int(l.split()[1]) for l in f if l.startswith(field))
        base = status_kb("VmRSS:")
        masks_from_shards([{trained!r}], "movement_global", 0.2, initial=[{initial!r}])
        masks_from_shards([{trained!r}], "large_final_global", 0.2)
        print((status_kb("VmHWM:") - base) / 1024)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    extra_mb = float(out.stdout.strip().splitlines()[-1])
    assert extra_mb < 120, f"extra resident memory {extra_mb:.0f} MB"


def test_a_fraction_that_prunes_nothing_warns(tmp_path: Path) -> None:
    import warnings

    from ltp_core import NothingPrunedWarning

    path = tmp_path / "w.npz"
    np.savez(path, a=np.arange(1.0, 5.0).reshape(2, 2), b=np.arange(1.0, 7.0).reshape(2, 3))
    with pytest.warns(NothingPrunedWarning, match=r"fraction=0.1 of the 10 selected .*global"):
        result = masks_from_shards([path], "large_final", 0.1)  # floor(0.4), floor(0.6): 0
    assert [layer.kept for layer in result.report.layers] == [4, 6]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = masks_from_shards([path], "large_final_global", 0.1)  # floor(1.0) = 1
    assert sum(layer.kept for layer in result.report.layers) == 9


def test_a_global_selection_that_empties_a_tensor_warns(tmp_path: Path) -> None:
    import warnings

    from ltp_core import LayerCollapseWarning

    path = tmp_path / "w.npz"
    np.savez(path, small=np.full((2, 2), 0.01), big=np.arange(1.0, 7.0).reshape(2, 3))
    with pytest.warns(LayerCollapseWarning, match=r"\['small'\].*min_layer_density") as caught:
        result = masks_from_shards([path], "large_final_global", 0.9)
    assert [layer.kept for layer in result.report.layers] == [0, 1]
    assert caught[0].filename == __file__  # points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kept = masks_from_shards([path], "large_final_global", 0.8, min_layer_density=0.1)
        masks_from_shards([path], "large_final", 0.5)  # layer scope never empties a tensor
    assert [layer.kept for layer in kept.report.layers] == [1, 1]


def test_default_selection_leaves_embedding_tables_and_tokens_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import warnings

    from ltp_core import LowCoverageWarning
    from ltp_core.cli import main as ltp

    rng = np.random.default_rng(0)
    tensors = {  # a GPT-2-like checkpoint: tables by name, a learned token, matrices, a norm
        "transformer.wte.weight": rng.normal(size=(50, 8)).astype(np.float32),
        "transformer.wpe.weight": rng.normal(size=(16, 8)).astype(np.float32),
        "transformer.cls_token": rng.normal(size=(1, 1, 8)).astype(np.float32),
        "transformer.h.0.attn.c_attn.weight": rng.normal(size=(8, 24)).astype(np.float32),
        "transformer.h.0.mlp.c_fc.weight": rng.normal(size=(8, 32)).astype(np.float32),
        "transformer.h.0.ln_1.weight": np.ones(8, np.float32),
        "lm_head.weight": rng.normal(size=(50, 8)).astype(np.float32),
    }
    path = tmp_path / "model.safetensors"
    write_safetensors(path, tensors)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 1,104 of 1,872 weights pruned: no coverage warning
        result = masks_from_shards([path], "large_final_global", 0.5)
    assert result.names == [
        "transformer.h.0.attn.c_attn.weight",
        "transformer.h.0.mlp.c_fc.weight",
        "lm_head.weight",
    ]
    assert result.left_out == [
        ("transformer.wte.weight", "embedding or positional table (by name)"),
        ("transformer.wpe.weight", "embedding or positional table (by name)"),
        ("transformer.cls_token", "vector-shaped"),
    ]
    assert masks_from_shards([path], "large_final", 0.5, include="wte").names == [
        "transformer.wte.weight"  # an explicit choice is taken as given
    ]
    assert ltp(["mask", str(path), "--fraction", "0.5", "--out", str(tmp_path / "m.npz")]) == 0
    out = capsys.readouterr().out
    assert "left out by default: transformer.wte.weight (embedding" in out and "--include" in out
    small = {k: v for k, v in tensors.items() if k != "lm_head.weight"}  # tables dominate
    write_safetensors(tmp_path / "small.safetensors", small)
    with pytest.warns(
        LowCoverageWarning, match=r"448 of .* 992 weights \(45%\); left out: transformer.wte.weight"
    ):
        masks_from_shards([tmp_path / "small.safetensors"], "large_final", 0.5)


def test_ltp_mask_prints_warnings_as_one_line_each(tmp_path: Path) -> None:
    path = tmp_path / "w.npz"
    np.savez(path, small=np.full((2, 2), 0.01), big=np.arange(1.0, 7.0).reshape(2, 3))
    argv = ["mask", str(path), "--fraction", "0.9", "--out", str(tmp_path / "m.npz")]
    script = f"import sys; from ltp_core.cli import main; sys.exit(main({argv!r}))"
    command = [sys.executable, "-c", script]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr  # no file name, no source line
    assert lines[0].startswith("ltp: warning: Global selection (large_final_global, fraction=0.9)")
    assert lines[0].endswith("(LayerCollapseWarning)")
