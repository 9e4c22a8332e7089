"""The DAU emulator against a tiny real asyncio TCP platform: uploads and answers, resends
(RF=1 in 2025) and reconnects, heartbeats, SM4, and the command sequences 9011 -> uploads -> 9012."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from support.hj212_platform import Platform

from envcal.dau import Dau
from envcal.protocols import hj212_commands as cmds
from envcal.protocols.hj212 import encode_frame
from envcal.protocols.hj212_codes import ExeRtn, QnRtn
from envcal.protocols.records import UTC8

MN = "33040000000001"
KEY = b"0" * 16
T0 = dt.datetime(2026, 1, 15, 8, 0, tzinfo=UTC8)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def dau(port: int, **kw) -> Dau:
    kw.setdefault("timeout_s", 0.3)
    kw.setdefault("reconnect_s", 0.05)
    return Dau("127.0.0.1", port, MN, st="31", **kw)


def test_dau_upload_2017_answered_with_9014():
    async def main():
        async with Platform() as p:
            d = dau(p.port)
            await d.start()
            ans = await d.upload("2011", T0, "a21026-Rtd=22.5,a21026-Flag=N")
            await d.stop()
            (f,) = p.frames
            assert (f.cn, f.st, f.flag, f.mn, f.values) == ("2011", "31", 5, MN, {"a21026-Rtd": 22.5})
            assert (ans.cn, ans.st, ans.qn, ans.flag) == ("9014", "91", f.qn, 4)
            assert d.stats["sent"] == 1 and d.stats["resent"] == 0 and d.stats["answered"] == 1
            assert d.history["2011"] == {T0: "a21026-Rtd=22.5,a21026-Flag=N"}
    run(main())


@pytest.mark.parametrize("version", [1, 2])
def test_dau_resends_unanswered_then_reconnects(version):
    async def main():
        async with Platform(answer=False) as p:
            d = dau(p.port, version=version, retries=3)
            await d.start()
            task = d.submit("2061", T0, "w01018-Avg=40.1,w01018-Flag=N")
            await p.wait(lambda fs: len(fs) >= 5)  # 1 + 3 resends, then again after reconnecting
            copies = p.frames[:5]
            assert len({f.qn for f in copies}) == 1 and d.stats["link_failures"] >= 1
            assert d.stats["connects"] >= 2
            assert [f.rf for f in copies] == ([False] * 5 if version == 1 else [False] + [True] * 4)
            assert len({f.digest for f in copies}) == 1  # a resend is the same frame
            p.answer = True
            ans = await asyncio.wait_for(task, 5)
            assert ans.cn == "9014" and ans.flag == (4 if version == 1 else 8)
            await d.stop()
    run(main())


def test_dau_2025_heartbeats_answered_with_9013():
    async def main():
        async with Platform() as p:
            d = dau(p.port, version=2, heartbeat_s=0.05)
            await d.start()
            await p.wait(lambda fs: sum(f.cn == "9015" for f in fs) >= 3)
            await asyncio.sleep(0.1)
            await d.stop()
            hb = [f for f in p.frames if f.cn == "9015"]
            assert all(f.version == 2 and f.ack_requested and f.st == "31" for f in hb)
            assert d.stats["heartbeats_answered"] >= 3
    run(main())


def test_dau_2025_sm4_uploads_decrypt_with_the_key():
    async def main():
        async with Platform(key=KEY) as p:
            d = dau(p.port, version=2, key=KEY, length="plaintext")
            await d.start()
            await d.upload("2011", T0, "a21026-Rtd=22.5,a21026-Flag=N;a21002-Rtd=41.0,a21002-Flag=N")
            await d.stop()
            (f,) = p.frames
            assert f.encrypted and f.values == {"a21026-Rtd": 22.5, "a21002-Rtd": 41.0}
            assert f.flag == 9
    run(main())


def test_dau_time_calibration_request_then_set_time():
    async def main():
        async with Platform() as p:
            d = dau(p.port, clock=lambda: dt.datetime(2026, 1, 15, 0, 0, 10, tzinfo=dt.UTC))
            await d.start()
            ans = await d.request_time_calibration("a21026")
            assert ans.cn == "9013" and p.frames[0].fields == {"PolId": "a21026"}
            cn, cp = cmds.cmd_set_time(dt.datetime(2026, 1, 15, 0, 5, 0, tzinfo=dt.UTC))
            await p.send(cmds.encode_request(cn, MN, "123456", "31", "20260115080500000", cp))
            await p.wait(lambda fs: "9012" in [f.cn for f in fs])
            assert p.cns() == ["1013", "9011", "9012"]
            assert p.frames[1].fields == {"QnRtn": "1"} and p.frames[2].fields == {"ExeRtn": "1"}
            assert d.now() == dt.datetime(2026, 1, 15, 0, 5, 0, tzinfo=dt.UTC)
            # 1011: the DAU uploads its time (Table C.2: no answer asked), then 9012
            cn, cp = cmds.cmd_get_time()
            await p.send(cmds.encode_request(cn, MN, "123456", "31", "20260115080600000", cp))
            await p.wait(lambda fs: len(fs) >= 6)
            await d.stop()
            assert p.cns()[3:] == ["9011", "1011", "9012"]
            assert p.frames[4].fields["SystemTime"] == "20260115080500"
            assert not p.frames[4].ack_requested
    run(main())


@pytest.mark.parametrize("version", [1, 2])
def test_dau_history_request_from_buffer(version):
    async def main():
        async with Platform(key=KEY) as p:
            d = dau(p.port, version=version, key=KEY)
            await d.start()
            for h in range(3):
                d.history.setdefault("2061", {})[T0 + dt.timedelta(hours=h)] = f"w01018-Avg={h}.5"
            cn, cp = cmds.cmd_history("2061", T0 + dt.timedelta(hours=1), T0 + dt.timedelta(hours=2))
            await p.send(cmds.encode_request(cn, MN, "123456", "31", "20260115100000000", cp,
                                             version=version, key=KEY))
            await p.wait(lambda fs: "9012" in [f.cn for f in fs])
            assert p.cns() == ["9011", "2061", "2061", "9012"]
            ups = p.frames[1:3]
            assert [f.values["w01018-Avg"] for f in ups] == [1.5, 2.5]
            assert all(f.ack_requested and f.version == version for f in ups)
            assert all(f.encrypted == (version == 2) for f in ups)
            assert d.stats["answered"] == 2  # each upload waited for its 9014
            assert p.frames[-1].fields == {"ExeRtn": "1"} and p.frames[-1].qn == "20260115100000000"
            # nothing in the range: ExeRtn 100
            cn, cp = cmds.cmd_history("2051", T0, T0)
            await p.send(cmds.encode_request(cn, MN, "123456", "31", "20260115100100000", cp,
                                             version=version, key=KEY))
            await p.wait(lambda fs: len(fs) >= 6)
            await d.stop()
            assert p.cns()[4:] == ["9011", "9012"]
            assert p.frames[5].fields == {"ExeRtn": str(int(ExeRtn.NO_DATA))}
    run(main())


def test_dau_calibration_and_std_check_run_the_handler():
    calls = []

    def handler(cn, polid):
        calls.append((cn, polid))
        if cn == "3011":
            return [("2011", T0, f"{polid}-Rtd=0.1,{polid}-Flag=C"),
                    ("2011", T0 + dt.timedelta(seconds=15), f"{polid}-Rtd=160.2,{polid}-Flag=C")]
        return [("2062", T0, f"{polid}-SampleRd=51.2,{polid}-StandardValue=50.0,{polid}-ResultType=1")]

    async def main():
        async with Platform() as p:
            d = dau(p.port, version=2, check_handler=handler)
            await d.start()
            for qn, cmd in (("20260115100000000", cmds.cmd_calibrate("a21026")),
                            ("20260115110000000", cmds.cmd_std_check("w01018"))):
                await p.send(cmds.encode_request(*cmd[:1], MN, "123456", "31", qn, cmd[1], version=2))
                await p.wait(lambda fs, q=qn: any(f.cn == "9012" and f.qn == q for f in fs))
            await d.stop()
            assert calls == [("3011", "a21026"), ("3024", "w01018")]
            assert p.cns() == ["9011", "2011", "2011", "9012", "9011", "2062", "9012"]
            assert p.frames[2].flags == {"a21026": "C"}
            assert p.frames[5].values["w01018-SampleRd"] == 51.2
    run(main())


def test_dau_3020_device_info():
    async def main():
        async with Platform() as p:
            d = dau(p.port, info={"i11001": "//清洗管路//"})
            await d.start()
            cn, cp = cmds.cmd_device_info("i11001", "w01018")
            await p.send(cmds.encode_request(cn, MN, "123456", "31", "20260115100000000", cp))
            await p.wait(lambda fs: "9012" in [f.cn for f in fs])
            await d.stop()
            assert p.cns() == ["9011", "3020", "9012"]
            assert p.frames[1].fields["i11001-Info"] == "//清洗管路//"
    run(main())


@pytest.mark.parametrize("change, code", [("pw", QnRtn.PW_ERROR), ("mn", QnRtn.MN_ERROR),
                                          ("cn", QnRtn.CN_ERROR), ("crc", QnRtn.CRC_ERROR)])
def test_dau_refuses_bad_commands_with_qnrtn(change, code):
    async def main():
        async with Platform() as p:
            d = dau(p.port)
            await d.start()
            pw = "999999" if change == "pw" else "123456"
            mn = "33049999999999" if change == "mn" else MN
            cn = "3013" if change == "cn" else "3011"
            data = encode_frame(cn=cn, mn=mn, qn="20260115100000000", st="31", pw=pw, flag=5,
                                cp="PolId=a21026")
            if change == "crc":
                data = data[:-6] + b"0000\r\n"
            await p.send(data)
            await p.wait(lambda fs: "9011" in [f.cn for f in fs])
            await asyncio.sleep(0.1)
            await d.stop()
            assert p.cns() == ["9011"]  # no execution, no 9012
            assert p.frames[0].fields == {"QnRtn": str(int(code))}
    run(main())


def test_dau_reconnects_when_platform_drops_the_link():
    async def main():
        async with Platform() as p:
            d = dau(p.port)
            await d.start()
            await d.upload("2011", T0, "a21026-Rtd=1")
            p.writers[-1].close()
            await asyncio.sleep(0.2)
            await d.upload("2011", T0 + dt.timedelta(minutes=1), "a21026-Rtd=2")
            await d.stop()
            assert d.stats["connects"] == 2 and len(p.writers) == 2
            assert [f.values["a21026-Rtd"] for f in p.frames] == [1.0, 2.0]
    run(main())


def test_dau_send_raw_glued_and_split_and_wait_answer():
    async def main():
        async with Platform() as p:
            d = dau(p.port)
            await d.start()
            await asyncio.wait_for(d.connected.wait(), 5)
            q1, f1 = d.data_frame("2011", T0, "a21026-Rtd=1")
            q2, f2 = d.data_frame("2011", T0 + dt.timedelta(minutes=1), "a21026-Rtd=2")
            await d.send_raw(b"garbage" + f1 + f2, chunks=[3, 10, 1, 50], pause_s=0.01)
            assert (await d.wait_answer(q1)).qn == q1 and (await d.wait_answer(q2)).qn == q2
            with pytest.raises(TimeoutError):
                await d.wait_answer("20000101000000000", timeout_s=0.05)
            await d.stop()
            assert [f.qn for f in p.frames] == [q1, q2]
    run(main())


def test_dau_takes_a_new_key_from_1014():
    new = bytes(range(16))

    async def main():
        async with Platform(key=KEY) as p:
            d = dau(p.port, version=2, key=KEY)
            await d.start()
            cn, cp = cmds.cmd_new_key(new, dt.datetime(2026, 1, 15, tzinfo=dt.UTC))
            assert cp == "SKCreateTime=20260115080000;NewSK=000102030405060708090A0B0C0D0E0F"
            await p.send(cmds.encode_request(cn, MN, "123456", "31", "20260115100000000", cp,
                                             version=2, key=KEY))
            await p.wait(lambda fs: "9012" in [f.cn for f in fs])
            assert p.frames[-1].fields == {"ExeRtn": "1"} and d.key == new
            p.key = new  # from now on the DAU encrypts with the new key
            await d.upload("2011", T0, "a21026-Rtd=22.5,a21026-Flag=N;a21002-Rtd=41.0")
            await d.stop()
            assert p.frames[-1].encrypted and p.frames[-1].values["a21026-Rtd"] == 22.5
    run(main())
