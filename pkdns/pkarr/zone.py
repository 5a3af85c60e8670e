"""Zone text <-> pkarr records (dnslib RRs), with the key as the origin.

The text is RFC 1035 §5 master-file syntax read by dnspython's zone reader, the way
pkdns-cli reads its zone files (``cli/src/simple_zone.rs``): the origin is ``<z32>.``, the
default TTL is 300 (``$TTL`` overrides), ``@`` is the apex, relative names get the key
appended, names ending in ``.`` are absolute (use that for ICANN targets). No SOA is needed;
an SOA line is refused because resolvers synthesize the SOA of a key. Every type dnspython
knows is accepted (A, AAAA, CNAME, TXT, MX, NS, SRV, CAA, PTR, SVCB, HTTPS, ...).

dnspython and dnslib meet only as wire bytes: each rdata goes to dnslib through its
uncompressed wire form. A type dnslib would not re-encode identically is carried as opaque
rdata, so the signed packet always holds exactly what the zone says.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterable
from typing import Any

import dns.exception
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.tokenizer
import dns.transaction
import dns.zonefile
import dnslib

from pkdns.errors import UsageError
from pkdns.pkarr.keys import PublicKey

DEFAULT_TTL = 300
VARIABLES = ("{external_ipv4}", "{external_ipv6}")
_ALLOWED_DIRECTIVES = {"$TTL", "$ORIGIN"}
# Types that never belong in a published zone (RFC 6895 meta/QTYPEs and the SOA we make).
# dnspython's exception constructors are untyped; the zone reader adds FILE:LINE to these.
_SyntaxError: Any = dns.exception.SyntaxError

_SOA_REFUSED = "SOA records cannot be published in a pkarr zone (resolvers synthesize it)"
_REFUSED = {dns.rdatatype.SOA, dns.rdatatype.OPT, dns.rdatatype.TSIG, dns.rdatatype.TKEY}


class _Reader(dns.zonefile.Reader):
    """dnspython's reader, remembering the line a record starts on.

    dnspython reports the tokenizer's position when an error surfaces, which for errors
    found at the end of a record (bad address, refused type) is already the next line.
    """

    record_line: int | None = None

    def _rr_line(self) -> None:
        self.record_line = _line(self.tok)
        super()._rr_line()
        self.record_line = None


def parse_zone(text: str, key: PublicKey, *, filename: str = "<zone>") -> list[Any]:
    """Records (dnslib RRs, absolute owner names under the key) of zone ``text``.

    Raises:
        UsageError: ``FILE:LINE: message`` for syntax errors, unknown types, owner names
            outside the key, refused types, a CNAME next to other data.
    """
    origin = dns.name.from_text(key.z32)
    manager: Any = dns.zonefile.RRSetsReaderManager(dns.name.root, False, dns.rdataclass.IN)
    tok = dns.tokenizer.Tokenizer(text, filename)
    refused: list[str] = []   # the checker's own messages already say what is wrong
    try:
        with manager.writer(True) as txn:
            reader = _Reader(
                tok, dns.rdataclass.IN, txn,
                allow_directives=_ALLOWED_DIRECTIVES, default_ttl=DEFAULT_TTL,
            )
            # The reader's zone origin stays the root so out-of-zone owner names reach our
            # check (dnspython would silently skip them); relative names use the key.
            reader.current_origin = reader.last_name = origin
            txn.check_put_rdataset(_checker(origin, refused))
            reader.read()
    except (dns.exception.DNSException, ValueError) as exc:  # CNAMEAndOtherData, SOA, ...
        detail = re.sub(r"^.*?:\d+: ", "", str(exc)) if _is_syntax(exc) else str(exc)
        detail = _SOA_REFUSED if "non-origin SOA" in detail else _clean(detail)
        line = reader.record_line or _line(tok)
        lines = text.splitlines()
        if _is_syntax(exc) and not refused and 0 < line <= len(lines):
            detail = _explain(lines[line - 1], detail)
        raise UsageError(_with_source(f"{filename}:{line}: {detail}", text)) from None
    return [rr for rrset in manager.rrsets for rr in _to_dnslib(rrset, origin)]


def _checker(origin: dns.name.Name, refused: list[str]
             ) -> Callable[[Any, dns.name.Name, Any], None]:
    def refuse(message: str) -> Exception:
        refused.append(message)
        return _SyntaxError(message)  # type: ignore[no-any-return]

    def check(txn: Any, name: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> None:
        if not name.is_subdomain(origin):
            raise refuse(
                f"owner name {name} is outside the key's zone {origin}"
                " (relative names get the key appended; drop the trailing dot)"
            )
        if rdataset.rdtype in _REFUSED or dns.rdatatype.is_metatype(rdataset.rdtype):
            text = dns.rdatatype.to_text(rdataset.rdtype)
            raise refuse(f"{text} records cannot be published in a pkarr zone")
        if any(not rdata.to_wire() for rdata in rdataset):
            # RFC 1035 allows it, but dnslib (our packet parser) rejects empty RDATA.
            raise refuse(f"{name} has an empty {_type(rdataset.rdtype)} record")

    return check


def _explain(line: str, detail: str) -> str:
    """Say which variable or record field ``line`` got wrong, where dnspython does not.

    dnspython reports a bad address and a leftover ``{external_ipv5}`` alike as "Text input
    is malformed"; the user needs the record type, the field and, for a misspelt variable,
    the names that exist.
    """
    unknown = [v for v in re.findall(r"\{[\w.-]*\}", line.split(";")[0]) if v not in VARIABLES]
    if unknown:
        return f"unknown variable {unknown[0]} (known: {', '.join(VARIABLES)})"
    found = _record_type(line)
    if found is None or re.search(r"class|TTL|directive", detail):  # not about the data
        return detail
    rdtype, data = found
    name = dns.rdatatype.to_text(rdtype)
    if rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) and "malformed" in detail:
        family = "IPv4" if rdtype == dns.rdatatype.A else "IPv6"
        return f"{name} record: {data!r} is not an {family} address"
    get_class: Any = dns.rdata.get_rdata_class
    fields = getattr(get_class(dns.rdataclass.IN, rdtype), "__slots__", ())
    if not fields:
        return f"{detail.rstrip('.')} (in the {name} record)"
    return f"{detail.rstrip('.')} ({name} record fields: {' '.join(fields)})"


def _record_type(line: str) -> tuple[dns.rdatatype.RdataType, str] | None:
    """The type of the record on ``line`` and the rdata text after it (None: not found).

    A line that starts with a blank has no owner name; otherwise the first word is the owner
    (which may spell a type, like ``mx``) and is skipped.
    """
    words = line.split(";")[0].split()
    start = 0 if line[:1].isspace() else 1
    for i in range(start, len(words)):
        if words[i].upper() in ("IN", "CH", "HS") or words[i].isdigit():
            continue
        try:
            rdtype = dns.rdatatype.from_text(words[i])
        except dns.rdatatype.UnknownRdatatype:
            return None
        return rdtype, " ".join(words[i + 1:])
    return None


def _line(tok: dns.tokenizer.Tokenizer) -> int:
    """The tokenizer's line; it counts a newline it read ahead and gave back (ungot)."""
    return tok.line_number - (1 if tok.ungotten_char == "\n" else 0)


def _is_syntax(exc: BaseException) -> bool:
    return isinstance(exc, dns.exception.SyntaxError)


def _with_source(message: str, text: str) -> str:
    """Append the offending line of the zone text to a ``FILE:LINE: detail`` message."""
    m = re.match(r".*?:(\d+): ", message)
    lines = text.splitlines()
    if m and 0 < int(m.group(1)) <= len(lines) and lines[int(m.group(1)) - 1].strip():
        return f"{message.rstrip('.')}: {lines[int(m.group(1)) - 1].strip()!r}"
    return message


def _clean(message: str) -> str:
    """dnspython wraps rdata errors as "caught exception <class 'X'>: detail"; keep detail."""
    return re.sub(r"caught exception <class '[\w.]+'>: ", "", message)


def _to_dnslib(rrset: dns.rrset.RRset, origin: dns.name.Name) -> list[Any]:
    """One dnslib RR per rdata, via the uncompressed wire form.

    The owner is re-rooted on the lowercase key, so ``foo.<KEY IN CAPITALS>.`` keeps its key
    label canonical (pkarr's normalize_name compares the key case-sensitively).
    """
    owner = rrset.name.relativize(origin).derelativize(origin)
    name_wire = owner.to_wire() or b""
    out = []
    for rdata in rrset:
        wire = rdata.to_wire() or b""
        head = struct.pack(">HHIH", rrset.rdtype, rrset.rdclass, rrset.ttl, len(wire))
        rr = None
        try:
            rr = dnslib.RR.parse(dnslib.DNSBuffer(name_wire + head + wire))
            if not _same_rdata(rr, rdata):
                rr = None
        except Exception:  # dnslib cannot read this rdata: carry it opaque (below)
            rr = None
        if rr is None:
            rr = dnslib.RR(
                rname=dnslib.DNSLabel(list(owner.labels[:-1])), rtype=rrset.rdtype,
                rclass=rrset.rdclass, ttl=rrset.ttl, rdata=dnslib.RD(wire),
            )
        out.append(rr)
    return out


def _same_rdata(rr: Any, rdata: dns.rdata.Rdata) -> bool:
    """True if dnslib re-encodes ``rr`` to an rdata dnspython reads back as ``rdata``."""
    (parsed,) = _from_dnslib([rr])
    return bool(parsed[1] == rdata)


def _from_dnslib(records: Iterable[Any]) -> list[tuple[dns.name.Name, dns.rdata.Rdata, int]]:
    """(owner, dnspython rdata, ttl) of each dnslib RR, read back from dnslib's wire form."""
    out = []
    for rr in records:
        msg = dnslib.DNSRecord(dnslib.DNSHeader(id=0, bitmap=0x8000), rr=[rr])
        (rrset,) = dns.message.from_wire(bytes(msg.pack())).answer
        (rdata,) = rrset
        out.append((rrset.name, rdata, rrset.ttl))
    return out


def _type(rdtype: int) -> str:
    return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rdtype))


def records_to_text(records: Iterable[Any], origin_z32: str) -> str:
    """Zone text of dnslib ``records``, names relative to the key (``@`` for the apex)."""
    origin = dns.name.from_text(origin_z32)
    lines = []
    for name, rdata, ttl in _from_dnslib(records):
        owner = name.relativize(origin).to_text() if name.is_subdomain(origin) else str(name)
        data = rdata.to_text(origin=origin, relativize=True)
        lines.append(f"{owner} {ttl} IN {_type(rdata.rdtype)} {data}")
    return "".join(line + "\n" for line in lines)


def variables_used(text: str) -> tuple[bool, bool]:
    """Whether ``text`` uses ``{external_ipv4}`` and ``{external_ipv6}``."""
    return VARIABLES[0] in text, VARIABLES[1] in text


def substitute_variables(text: str, v4: str | None, v6: str | None) -> str:
    """Replace the DynDNS variables (pkdns-cli ``publish``): plain text replacement.

    Raises:
        UsageError: the text uses a variable whose value was not given.
    """
    for variable, value in zip(VARIABLES, (v4, v6), strict=True):
        if variable in text:
            if value is None:
                raise UsageError(f"the zone uses {variable} but no address is known for it")
            text = text.replace(variable, value)
    return text
