"""SM4-ECB encryption of the HJ 212-2025 data area (CP).

The characters between ``CP=&&`` and the closing ``&&`` are encrypted in 16-byte groups with
SM4 in ECB mode and no padding; a last group shorter than 16 bytes stays plaintext. The
ciphertext is written as hex text ``{0xE4,0x3E,...}``; the plaintext tail follows the ``}``
(the standard's second example ends ``...,0xA4}g=N&&``). Some texts print the tail inside the
braces as well (``...,0xA4,0x67,0x3D,0x4E}``): both forms decode. The CRC is computed over
the plaintext data segment, before encryption.

SM4 itself comes from ``cryptography`` (OpenSSL); this module only cuts the groups.

References
----------
HJ 212-2025, clause 6.4.2 (SM4, 128-bit key, ECB, no padding, the span encrypted),
Appendix A.2 (groups of 16 characters, shorter rest in plaintext, CRC before encryption;
worked examples with the key of sixteen 0x30 bytes). GB/T 32907-2016 (SM4).
"""

from __future__ import annotations

import re

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["BLOCK", "Sm4Error", "decrypt_area", "encrypt_area", "looks_encrypted"]

#: SM4 block and key size [bytes].
BLOCK = 16
_HEX_ITEM = re.compile(r"\s*0[xX]([0-9A-Fa-f]{2})\s*")


class Sm4Error(ValueError):
    """A key or an encrypted data area that cannot be used; the message says why."""


def _cipher(key: bytes) -> Cipher:
    if not isinstance(key, (bytes, bytearray)) or len(key) != BLOCK:
        n = len(key) if isinstance(key, (bytes, bytearray)) else type(key).__name__
        raise Sm4Error(f"SM4 key must be {BLOCK} bytes (128 bits), got {n}")
    # ECB is what HJ 212-2025 clause 6.4.2 prescribes for CP (security/README.md)
    return Cipher(algorithms.SM4(bytes(key)), modes.ECB())  # nosec B305


def looks_encrypted(area: str) -> bool:
    """Whether a CP data area is in the encrypted form (starts with ``{0x``).

    Parameters
    ----------
    area : str
        Text between ``CP=&&`` and the closing ``&&``.

    Returns
    -------
    bool

    References
    ----------
    HJ 212-2025, Appendix A.2.
    """
    return area.startswith(("{0x", "{0X"))


def encrypt_area(area: bytes, key: bytes) -> str:
    """Encrypt a data area.

    Parameters
    ----------
    area : bytes
        Plaintext between ``CP=&&`` and ``&&`` (UTF-8 bytes).
    key : bytes
        16-byte SM4 key.

    Returns
    -------
    str
        ``{0x..,0x..}`` for the whole 16-byte groups, then the plaintext rest (shorter than
        16 bytes) as text; ``area`` unchanged (as text) when it is shorter than 16 bytes.

    Raises
    ------
    Sm4Error
        A key that is not 16 bytes.

    References
    ----------
    HJ 212-2025, clause 6.4.2 and Appendix A.2.
    """
    enc = _cipher(key).encryptor()
    full = len(area) - len(area) % BLOCK
    if full == 0:
        return area.decode("utf-8", "surrogateescape")
    ct = enc.update(bytes(area[:full])) + enc.finalize()
    return ("{" + ",".join(f"0x{b:02X}" for b in ct) + "}"
            + area[full:].decode("utf-8", "surrogateescape"))


def decrypt_area(text: str, key: bytes) -> bytes:
    """Decrypt an encrypted data area.

    Parameters
    ----------
    text : str
        ``{0x..,...}`` followed by an optional plaintext tail.
    key : bytes
        16-byte SM4 key.

    Returns
    -------
    bytes
        The plaintext data area. Whole 16-byte groups inside the braces are decrypted; bytes
        left over inside the braces (a plaintext rest printed as hex) and the text after
        ``}`` are plaintext.

    Raises
    ------
    Sm4Error
        No closing brace, an item that is not ``0xNN``, a bad key.

    References
    ----------
    HJ 212-2025, Appendix A.2.
    """
    end = text.find("}")
    if not text.startswith("{") or end < 0:
        raise Sm4Error("encrypted CP: no closing '}' after the hex bytes")
    items = text[1:end].split(",")
    out = bytearray()
    for item in items:
        m = _HEX_ITEM.fullmatch(item)
        if m is None:
            raise Sm4Error(f"encrypted CP: item {item[:16]!r} is not 0xNN")
        out.append(int(m.group(1), 16))
    full = len(out) - len(out) % BLOCK
    dec = _cipher(key).decryptor()
    plain = dec.update(bytes(out[:full])) + dec.finalize() if full else b""
    return plain + bytes(out[full:]) + text[end + 1:].encode("utf-8", "surrogateescape")
