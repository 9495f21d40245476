"""sipp UAC scenarios for calls into the appliance, built from steps (digits by RFC 2833 pcaps, SIP INFO or
an in-band tone stream; pauses) so each test says what the caller does, not XML."""

from __future__ import annotations

import subprocess
from pathlib import Path

PCAPS = Path("/usr/share/sip-tester")
PCAP_NAMES = {**{d: d for d in "0123456789"}, "#": "pound", "*": "star"}
# DTMF (ITU-T Q.23) row and column frequencies.
ROWS = {**dict.fromkeys("123A", 697), **dict.fromkeys("456B", 770), **dict.fromkeys("789C", 852),
        **dict.fromkeys("*0#D", 941)}
COLS = {**dict.fromkeys("147*", 1209), **dict.fromkeys("2580", 1336), **dict.fromkeys("369#", 1477),
        **dict.fromkeys("ABCD", 1633)}

FROM = '"Test Caller" <sip:+15555550142@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]'
HEAD = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="{name}">
"""


def _request(method: str, cseq: int, *, to_tag: bool, body: str = "", ctype: str = "") -> str:
    lines = [
        f"{method} sip:[service]@[remote_ip]:[remote_port] SIP/2.0",
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
        f"From: {FROM}",
        "To: <sip:[service]@[remote_ip]:[remote_port]>" + ("[peer_tag_param]" if to_tag else ""),
        "Call-ID: [call_id]",
        f"CSeq: {cseq} {method}",
        "Contact: <sip:sipp@[local_ip]:[local_port]>",
        "Max-Forwards: 70",
    ]
    if ctype:
        lines.append(f"Content-Type: {ctype}")
    lines.append("Content-Length: [len]" if body else "Content-Length: 0")
    text = "\n".join("      " + x for x in lines) + "\n\n"
    if body:
        text += "\n".join("      " + x for x in body.strip("\n").splitlines()) + "\n"
    return text


def sdp_offer(telephone_event: bool, direction: str = "", version: int = 2353687637) -> str:
    pts = "0 8 101" if telephone_event else "0 8"
    lines = ["v=0", f"o=sipp 53655765 {version} IN IP[local_ip_type] [local_ip]", "s=-",
             "c=IN IP[media_ip_type] [media_ip]", "t=0 0", f"m=audio [media_port] RTP/AVP {pts}",
             "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000"]
    if telephone_event:
        lines += ["a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15"]
    if direction:
        lines.append(f"a={direction}")
    return "\n".join(lines + ["a=ptime:20"]) + "\n"


def call(name: str, steps: list[tuple[str, str]], *, telephone_event: bool = True, hangup: str = "ivr") -> str:
    """INVITE, ACK, the steps, then the IVR's BYE answered (hangup="ivr") or ours (hangup="caller")."""
    out = [HEAD.format(name=name)]
    out.append('  <send retrans="500">\n    <![CDATA[\n\n'
               + _request("INVITE", 1, to_tag=False, body=sdp_offer(telephone_event), ctype="application/sdp")
               + "\n    ]]>\n  </send>\n")
    out.append('  <recv response="100" optional="true"/>\n  <recv response="180" optional="true"/>\n'
               '  <recv response="200" rtd="true"/>\n')
    out.append("  <send>\n    <![CDATA[\n\n" + _request("ACK", 1, to_tag=True) + "\n    ]]>\n  </send>\n")
    cseq = 2
    for kind, arg in steps:
        if kind == "pause":
            out.append(f'  <pause milliseconds="{arg}"/>\n')
        elif kind == "pcap":
            out.append(f'  <nop><action><exec play_pcap_audio="{PCAPS}/dtmf_2833_{PCAP_NAMES[arg]}.pcap"/>'
                       "</action></nop>\n  <pause milliseconds=\"400\"/>\n")
        elif kind == "info":
            body = f"Signal={arg}\nDuration=160\n"
            out.append('  <send retrans="500">\n    <![CDATA[\n\n'
                       + _request("INFO", cseq, to_tag=True, body=body, ctype="application/dtmf-relay")
                       + '\n    ]]>\n  </send>\n  <recv response="200"/>\n  <pause milliseconds="250"/>\n')
            cseq += 1
        elif kind in ("hold", "resume"):  # a re-INVITE putting the call on hold (sendonly) or taking it off
            direction = "sendonly" if kind == "hold" else "sendrecv"
            out.append('  <send retrans="500">\n    <![CDATA[\n\n'
                       + _request("INVITE", cseq, to_tag=True, body=sdp_offer(telephone_event, direction, 2353687637
                                                                              + cseq), ctype="application/sdp")
                       + '\n    ]]>\n  </send>\n  <recv response="100" optional="true"/>\n'
                       '  <recv response="200"/>\n'
                       "  <send>\n    <![CDATA[\n\n" + _request("ACK", cseq, to_tag=True) + "\n    ]]>\n  </send>\n")
            if arg:
                out.append(f'  <pause milliseconds="{arg}"/>\n')
            cseq += 1
        elif kind == "stream":
            out.append(f'  <nop><action><exec rtp_stream="{arg},1,0"/></action></nop>\n')
        else:
            raise ValueError(kind)
    if hangup == "ivr":
        out.append('  <recv request="BYE" timeout="60000"/>\n  <send>\n    <![CDATA[\n\n'
                   "      SIP/2.0 200 OK\n      [last_Via:]\n      [last_From:]\n      [last_To:]\n"
                   "      [last_Call-ID:]\n      [last_CSeq:]\n      Content-Length: 0\n\n    ]]>\n  </send>\n")
    else:
        out.append('  <send retrans="500">\n    <![CDATA[\n\n' + _request("BYE", cseq, to_tag=True)
                   + '\n    ]]>\n  </send>\n  <recv response="200"/>\n')
    out.append("</scenario>\n")
    return "".join(out)


def tone_file(path: Path, groups: list[str]) -> Path:
    """µ-law audio of DTMF key groups made by sox: 120 ms per key, 120 ms between keys, 1.2 s between
    groups (the caller pausing), ending in silence."""
    parts: list[Path] = []
    for gi, group in enumerate(groups):
        for ki, key in enumerate(group):
            part = path.with_name(f"{path.stem}-{gi}-{ki}.ul")
            subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-e", "u-law", "-t", "raw", str(part), "synth",
                            "0.12", "sine", str(ROWS[key]), "synth", "0.12", "sine", "mix", str(COLS[key]),
                            "gain", "-8", "pad", "0", "1.2" if ki == len(group) - 1 else "0.12"], check=True)
            parts.append(part)
    path.write_bytes(b"\xff" * 1600 + b"".join(p.read_bytes() for p in parts) + b"\xff" * 8000)
    return path
