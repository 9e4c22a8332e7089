"""HJ 212 frame splitter: glued, split and garbage-interleaved streams, caps, properties."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from envcal.protocols.hj212 import decode_frame, encode_frame
from envcal.protocols.hj212_stream import DEFAULT_MAX_FRAME, FrameSplitter, Skipped
from envcal.protocols.records import UTC8

KEY = b"0" * 16
T = dt.datetime(2026, 1, 15, 8, 0, tzinfo=UTC8)


def frame(i: int = 1, **kw) -> bytes:
    cp = {"a21026-Rtd": float(i), "a21026-Flag": "N", "a21002-Rtd": 2.5 * i}
    return encode_frame(cn="2011", mn=f"3304000000{i:04d}", data_time=T, cp=cp, **kw)


def run(splitter: FrameSplitter, chunks) -> list:
    out: list = []
    for c in chunks:
        out += splitter.feed(c)
    return out + splitter.flush()


def frames_of(items) -> list[bytes]:
    return [x for x in items if isinstance(x, bytes)]


def test_splitter_glued_frames_one_read():
    data = frame(1) + frame(2) + frame(3)
    assert run(FrameSplitter(), [data]) == [frame(1), frame(2), frame(3)]


def test_splitter_frame_over_many_reads():
    f = frame(7)
    s = FrameSplitter()
    got = []
    for b in f[:-1]:
        got += s.feed(bytes([b]))
        assert got == []
    assert s.buffered == len(f) - 1
    assert s.feed(f[-1:]) == [f] and s.buffered == 0


def test_splitter_garbage_skipped_with_reason_and_bytes():
    out = run(FrameSplitter(), [b"\x00\xffAT+CSQ\r\n" + frame(1) + b"noise" + frame(2)])
    assert out == [Skipped(b"\x00\xffAT+CSQ\r\n", "garbage before '##'"), frame(1),
                   Skipped(b"noise", "garbage before '##'"), frame(2)]


def test_splitter_bad_length_resyncs_at_next_header():
    f = frame(1)
    wrong = b"##0010" + f[6:]  # the length field lies: no CRLF 10 bytes later
    out = run(FrameSplitter(), [wrong + frame(2)])
    assert out[0] == Skipped(wrong, out[0].reason) and "bad length" in out[0].reason
    assert out[1:] == [frame(2)]


def test_splitter_bad_length_field_and_triple_hash():
    out = run(FrameSplitter(), [b"##ab12" + b"#" + frame(3)])
    assert out == [Skipped(b"##ab12", "bad length field b'ab12'"),
                   Skipped(b"#", "bad length field b'#012'"), frame(3)]


def test_splitter_frame_too_large_is_skipped():
    s = FrameSplitter(max_frame=200)
    long = b"##0300" + b"y" * 310
    out = run(s, [long + frame(1)])
    assert isinstance(out[0], Skipped) and "frame too large" in out[0].reason
    # a skipped piece is at most max_frame bytes long; the rest is garbage up to the next '##'
    assert out[0].raw == long[:200]
    assert out[1:] == [Skipped(long[200:], "garbage before '##'"), frame(1)]


def test_splitter_never_holds_more_than_cap():
    s = FrameSplitter(max_frame=100)
    skipped = 0
    for _ in range(50):
        for item in s.feed(b"z" * 37):
            skipped += len(item.raw)
        assert s.buffered <= 101
    assert skipped + s.buffered == 50 * 37


def test_splitter_incomplete_frame_at_end():
    s = FrameSplitter()
    assert s.feed(frame(1)[:30]) == []
    assert s.flush() == [Skipped(frame(1)[:30], "incomplete frame at end of stream")]
    assert s.flush() == []


def test_splitter_encrypted_frame_with_plaintext_length():
    # HJ 212-2025 Appendix A.2: the length field counts the plaintext, fewer bytes than sent
    enc = frame(4, flag=9, key=KEY, length="plaintext")
    assert int(enc[2:6]) < len(enc) - 12
    for cut in (1, 7, 50, len(enc) - 1):
        out = run(FrameSplitter(), [enc[:cut], enc[cut:] + frame(5)])
        assert out == [enc, frame(5)]
    assert decode_frame(enc, key=KEY).values["a21026-Rtd"] == 4.0


def test_splitter_rejects_tiny_cap():
    import pytest

    with pytest.raises(ValueError):
        FrameSplitter(max_frame=5)
    assert FrameSplitter().max_frame == DEFAULT_MAX_FRAME


# ----------------------------------------------------------------------------- property
garbage = st.binary(max_size=40).filter(lambda b: b"##" not in b and not b.endswith(b"#")
                                        and not b.startswith(b"#"))
stream_parts = st.lists(
    st.one_of(st.integers(1, 60).map(lambda i: ("frame", frame(i))),
              st.integers(1, 60).map(lambda i: ("frame", frame(i, flag=9, key=KEY,
                                                                 length="plaintext"))),
              garbage.map(lambda g: ("garbage", g))),
    max_size=12)


@settings(max_examples=300, deadline=None)
@given(parts=stream_parts, cuts=st.lists(st.integers(0, 4000), max_size=30))
def test_splitter_any_split_same_frames(parts, cuts):
    data = b"".join(p for _, p in parts)
    expected = [p for kind, p in parts if kind == "frame"]
    whole = run(FrameSplitter(), [data])
    assert frames_of(whole) == expected
    pts = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *pts], [*pts, len(data)], strict=True)]
    split = run(FrameSplitter(), chunks)
    assert split == whole  # frames and skipped pieces alike
    assert sum(len(x) if isinstance(x, bytes) else len(x.raw) for x in split) == len(data)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(0, 600), max_size=20))
def test_splitter_random_bytes_any_split_same_output(data, cuts):
    whole = run(FrameSplitter(max_frame=300), [data])
    pts = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *pts], [*pts, len(data)], strict=True)]
    assert run(FrameSplitter(max_frame=300), chunks) == whole
    assert sum(len(x) if isinstance(x, bytes) else len(x.raw) for x in whole) == len(data)
