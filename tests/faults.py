"""Helpers of the fault tests (issue 13): a decompression bomb, a snapshot of a directory, the
one-line error the house promises. Fixtures that mount disks are in conftest.py."""
from __future__ import annotations

from pathlib import Path


def write_bomb(path: Path, side: int = 20000) -> Path:
    """A real decompression bomb: a valid 8-bit grey PNG of side x side zeros (400 M pixels for
    20000), about 390 KB on disk, 400 MB once decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    z = zlib.compressobj(9)
    row = b"\0" * (side + 1)  # filter byte + pixels
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def snapshot(root: Path) -> dict[str, int]:
    """Every file under `root` with its size: what a failed run must leave as it found it."""
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file() or p.is_symlink()}


def one_error_line(out) -> str:
    """The stderr of a script that failed as the house rules say: `error: ...`, one line, exit 2."""
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: "), out.stderr[-2000:]
    return out.stderr
