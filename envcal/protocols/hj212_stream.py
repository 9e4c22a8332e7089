"""Cut a TCP byte stream into HJ 212 frames (one splitter per connection; no sockets here).

A TCP read is not a frame: a read may hold several frames glued together, part of one, or
bytes that are no frame at all. :class:`FrameSplitter` keeps the unfinished rest between
reads and cuts frames by the header ``##``, the 4-digit length and the CRLF that must follow
the 4 CRC digits. Anything else is skipped up to the next ``##`` and reported with the
bytes dropped and the reason, without losing the frames around it. The CRC and the content
are not checked here (that is :func:`envcal.protocols.hj212.decode_frame`).

An SM4-encrypted HJ 212-2025 frame may state the length of its *plaintext* segment, shorter
than the bytes sent; when the declared end holds no CRLF and the segment is in the
encrypted form (``CP=&&{0x``), the frame ends at the next CRLF.

References
----------
HJ 212-2017, clause 6.3.1 (Table 2: ``##``, 4-digit length, CRC, CRLF). HJ 212-2025,
Appendix A.2 (encrypted examples with the plaintext length).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_MAX_FRAME", "FrameSplitter", "Skipped"]

#: Largest frame a 4-digit length allows [bytes]: ``##`` + 4 + 9999 + 4 CRC + CRLF.
DEFAULT_MAX_FRAME = 2 + 4 + 9999 + 4 + 2
_ENC_MARK = b"CP=&&{0"


@dataclass(frozen=True, slots=True)
class Skipped:
    """Bytes of the stream that are not a frame, and why (``raw`` is what was dropped)."""

    raw: bytes
    reason: str


class FrameSplitter:
    """Frames out of a byte stream, fed one read at a time.

    Parameters
    ----------
    max_frame : int, optional
        Largest frame accepted [bytes], ``##`` to CRLF; a larger one is skipped ("frame too
        large"). The splitter never holds more than ``max_frame + 1`` bytes between reads.

    Notes
    -----
    The result does not depend on how the stream is cut into reads: every byte fed ends up
    in exactly one frame or one :class:`Skipped` (or is still buffered, :attr:`buffered`),
    and the frames and pieces are the same for any cut.

    References
    ----------
    HJ 212-2017, clause 6.3.1 (Table 2).
    """

    __slots__ = ("_buf", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if max_frame < 12:
            raise ValueError(f"max_frame must be at least 12 bytes, got {max_frame}")
        self.max_frame = max_frame
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes | Skipped]:
        """Add the bytes of one read; return the frames and skipped pieces now complete.

        Parameters
        ----------
        data : bytes
            Bytes as read from the connection.

        Returns
        -------
        list of bytes or Skipped
            In stream order. A frame is ``##`` .. CRLF (bytes, CRC not checked). A skipped
            piece ends where the next ``##`` starts, or after ``max_frame`` bytes; it is
            returned only once its end is known, so the pieces too are the same however the
            stream is cut into reads.

        References
        ----------
        HJ 212-2017, clause 6.3.1.
        """
        buf = self._buf
        buf += data
        out: list[bytes | Skipped] = []
        cap = self.max_frame
        pos = 0
        n = len(buf)
        while pos < n:
            start = buf.find(b"##", pos)
            if start != pos:
                if start < 0:
                    if n - pos <= cap:
                        break  # the '##' may still come (or a last '#' may start it)
                    start = n
                end = min(start, pos + cap)
                out.append(Skipped(bytes(buf[pos:end]), "garbage before '##'"))
                pos = end
                continue
            if n - pos < 6:
                break
            field = buf[pos + 2:pos + 6]
            if not (field.isdigit() and field.isascii()):
                why = f"bad length field {bytes(field)!r}"
            else:
                total = 6 + int(field) + 6
                if total > cap:
                    why = (f"frame too large: length field says {int(field)} bytes, "
                           f"at most {cap - 12}")
                elif n - pos < total and (buf.find(_ENC_MARK, pos, n) < 0
                                          or buf.find(b"\r\n", pos, n) < 0):
                    break  # wait for the rest (an encrypted frame is never shorter than declared)
                elif buf[pos + total - 2:pos + total] == b"\r\n":
                    out.append(bytes(buf[pos:pos + total]))
                    pos += total
                    continue
                elif buf.find(_ENC_MARK, pos, pos + total) >= 0:
                    crlf = buf.find(b"\r\n", pos + total - 2, min(n, pos + cap))
                    if crlf >= 0:
                        out.append(bytes(buf[pos:crlf + 2]))
                        pos = crlf + 2
                        continue
                    if n - pos < cap:
                        break  # wait for the CRLF
                    why = f"frame too large: no CRLF within {cap} bytes"
                else:
                    why = (f"bad length: no CRLF after the {int(field)} bytes the length "
                           "field says (plus 4 CRC digits)")
            nxt = buf.find(b"##", pos + 1)
            if nxt < 0:
                if n - pos <= cap:
                    break  # decided again when the next '##' (or enough bytes) arrives
                nxt = n
            end = min(nxt, pos + cap)
            out.append(Skipped(bytes(buf[pos:end]), why))
            pos = end
        del buf[:pos]
        return out

    def flush(self) -> list[Skipped]:
        """The connection closed: what is buffered is an incomplete frame.

        Returns
        -------
        list of Skipped
            Empty, or one piece with reason "incomplete frame at end of stream".
        """
        if not self._buf:
            return []
        rest = Skipped(bytes(self._buf), "incomplete frame at end of stream")
        self._buf.clear()
        return [rest]
