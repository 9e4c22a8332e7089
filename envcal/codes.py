"""The vocabulary of a check, defined once: check kinds, tested quantities and verdicts.

Every module that names a check kind, a tested quantity or a verdict takes it from here:
the wire decoders (:mod:`envcal.protocols`), the rule packs (:mod:`envcal.rules`), the
kernels (:mod:`envcal.kernels`, which use the integer codes) and the check core
(:mod:`envcal.checks`). Pure constants: this module imports nothing.

References
----------
HJ 75-2017 clause 7 (zero, span, linearity); HJ 355-2019 (standard sample); HJ 915-2017
(membrane, flow); ISO 13528:2022 §9.7 (E_n).
"""

from __future__ import annotations

#: kinds of QC check (``check.kind`` on the wire, ``check_kind`` of a rule)
CHECK_KINDS: tuple[str, ...] = ("zero", "span", "std_sample", "membrane", "flow", "linearity")
#: phases of a reading taken during a check
CHECK_PHASES: tuple[str, ...] = ("start", "run", "end")

#: tested quantity (a rule's ``quantity``, a result field) -> code of the kernels
QUANTITY_CODES: dict[str, int] = {"error_abs": 0, "error_rel_pct": 1, "error_fs_pct": 2,
                                  "drift_fs_pct": 3, "en": 4}
QUANTITIES: tuple[str, ...] = tuple(QUANTITY_CODES)

#: kernel verdict codes (``kernels.evaluate_checks``)
VERDICT_PASS = 0
VERDICT_WARN = 1
VERDICT_FAIL = 2
VERDICT_INVALID_NO_PLATEAU = 3
VERDICT_INVALID_TOO_SHORT = 4
#: the tested quantity cannot be computed (ref == 0 for a relative error, no previous check
#: for a drift, zero uncertainty for E_n, span <= 0, unknown quantity code).
VERDICT_INVALID_NOT_COMPUTABLE = 5
VERDICT_NAMES: tuple[str, ...] = ("pass", "warn", "fail", "invalid_no_plateau",
                                  "invalid_too_short", "invalid_not_computable")

#: verdict of a stored result, best first (the worst of several decides)
VERDICTS: tuple[str, ...] = ("pass", "warn", "fail", "invalid")
VERDICT_RANK: dict[str, int] = {v: i for i, v in enumerate(VERDICTS)}


#: relative tolerance used when comparing |q| with a limit, so that a value exactly at the
#: limit in decimal arithmetic (e.g. 2.5000000000000004 for 2.5 % F.S.) passes.
LIMIT_RTOL = 1e-12


def limit_verdict(q: float, warn_limit: float, fail_limit: float) -> int:
    """The verdict code of one tested quantity against a rule's warning level and limit.

    The one definition of the comparison: :mod:`envcal.kernels` compiles this function
    with numba (``kernels.limit_verdict``) for the batch kernel, and
    :meth:`envcal.rules.Rule.verdict` calls it as is.

    Parameters
    ----------
    q : float
        The tested quantity, in the unit of the limits.
    warn_limit : float
        Warning level on ``|q|`` (NaN: none, so ``|q| <= fail_limit`` passes).
    fail_limit : float
        Limit on ``|q|`` (``inf``: no limit).

    Returns
    -------
    int
        ``VERDICT_PASS`` (``|q| <= warn_limit``), ``VERDICT_WARN`` (``|q| <= fail_limit``),
        ``VERDICT_FAIL`` (beyond) or ``VERDICT_INVALID_NOT_COMPUTABLE`` (q NaN or ±inf).
        Comparisons allow a relative tolerance of :data:`LIMIT_RTOL`. Degenerate limits
        give a defined verdict, never an exception: a negative or NaN ``fail_limit`` fails
        every finite q.

    References
    ----------
    HJ 75-2017 clause 7.3 (``|drift| <= limit``); 40 CFR 75 Appendix A §3.1.
    """
    if q - q != 0.0:
        return VERDICT_INVALID_NOT_COMPUTABLE
    a = abs(q)
    if warn_limit == warn_limit:
        if a <= warn_limit + LIMIT_RTOL * abs(warn_limit):
            return VERDICT_PASS
        if a <= fail_limit + LIMIT_RTOL * abs(fail_limit):
            return VERDICT_WARN
        return VERDICT_FAIL
    if a <= fail_limit + LIMIT_RTOL * abs(fail_limit):
        return VERDICT_PASS
    return VERDICT_FAIL


def verdict_of_code(code: int) -> str:
    """The result verdict of a kernel verdict code (3, 4, 5 are all ``"invalid"``)."""
    return VERDICTS[min(int(code), 3)]
