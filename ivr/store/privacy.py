"""Personal data in an append-only log: crypto-shredding (docs/event-log.md, "Personal data").

With ``privacy:`` in the config, the personal fields of an event (the caller's number, the keys pressed, what
was collected or said, a callback number; ``PERSONAL``) are written sealed: AES-256-GCM (``cryptography``'s
AESGCM) under a key of the call's own, kept in ``privacy_keys`` beside the log. Erasing a call's personal data
is deleting its key: the events stay (append-only, with ``seq`` gap-free and the center's copy in step), but
what was sealed can no longer be opened, here or at the center (which only ever receives the sealed text).

The caller's number also goes out as ``caller_ref``: a keyed hash (HMAC-SHA-256 under the site's pseudonym key,
a file on the box) of the number in E.164, so repeat-caller KPIs (FCR) still match calls of one caller without
the number; boxes that share the key file match callers across sites. It is a pseudonym, not the number: the
key never leaves the box.

Mutable rows (``calls.caller``/``variables``, a callback's number) are not sealed — the dialer needs the number
until the callback is done — they are overwritten when erased. The connection runs ``secure_delete`` and the
WAL is checkpointed after an erasure, so the old bytes do not linger in the file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import phonenumbers
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MASK = "••••"


def mask(value: object) -> str:
    """A sensitive value as it may be recorded (``sensitive: true``): ``"4111111111111111"`` → ``"•••• 16
    digits"``; other text → ``"•••• 7 characters"``; empty → ``""``. Its length, never its characters."""
    text = "" if value is None else str(value)
    if not text:
        return ""
    unit = "digit" if text.isdigit() else "character"
    return f"{MASK} {len(text)} {unit}{'s' if len(text) != 1 else ''}"


SEALED = "sealed:v1:"
"""The prefix of a sealed value: ``sealed:v1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>``."""
ERASED = "(erased)"
"""What a sealed value reads as once its key is gone."""
REF = "ref:"
"""The prefix of a caller pseudonym (``caller_ref``)."""

PERSONAL: dict[str, tuple[str, ...]] = {
    "call.started": ("caller",),
    "sip.": ("from",),
    "input.dtmf": ("digit",),
    "input.speech": ("text", "heard", "alternatives"),
    "menu.no_match": ("input",),
    "collect.value": ("value",),
    "collect.invalid": ("entry",),
    "collect.confirm": ("entry",),
    "vars.set": ("values",),
    "callback.": ("number", "entry", "consent"),
}
"""Event type (or a prefix ending in a dot) → the fields sealed (and ``data2`` of a ``queue.log`` ENTERQUEUE row).
Everything else stays in clear: the KPIs read it."""

SUBJECT: dict[str, str] = {"call.started": "caller", "sip.": "from"}
"""The field naming whose call it is: its pseudonym is written as ``caller_ref`` and kept on the call's key."""


def _match(table: Mapping[str, Any], type: str) -> Any:
    if type in table:
        return table[type]
    for prefix, value in table.items():
        if prefix.endswith(".") and type.startswith(prefix):
            return value
    return None


def personal_fields(type: str, data: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    if type == "queue.log":  # the PBX's row of a caller joining a queue: data2 is their caller ID (no KPI reads it)
        return ("data2",) if data is not None and data.get("event") == "ENTERQUEUE" else ()
    return _match(PERSONAL, type) or ()


def normalise(number: str, region: str) -> str:
    """A phone number as E.164 when libphonenumber reads it in ``region``, else stripped as given (a SIP user
    part, "anonymous"): the same caller gives the same text however the PBX or an admin wrote the number."""
    raw = number.strip()
    if raw.lower().startswith(("sip:", "sips:", "tel:")):
        raw = raw.split(":", 1)[1].split("@", 1)[0].split(";", 1)[0]
    try:
        p = phonenumbers.parse(raw, region.upper())
        if phonenumbers.is_possible_number(p):
            return phonenumbers.format_number(p, phonenumbers.PhoneNumberFormat.E164)
    except phonenumbers.NumberParseException:
        pass
    return raw.lstrip("+")  # not a phone number: never taken for one


def load_pseudonym_key(path: Path) -> bytes:
    """The site's pseudonym key (32 random bytes), made on first use with mode 0600. Copy the same file to
    every box of one organisation for repeat callers to match across sites at the center."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return data
    if len(data) < 16:
        raise ValueError(f"{path}: a pseudonym key needs at least 16 bytes")
    return data


@dataclass
class Sealer:
    """Seals the personal fields of events with per-call keys; keeps the keys this process knows."""

    pseudonym_key: bytes
    region: str = "US"
    keys: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    """Call id (or ``day-...``) → its key id and key, for the calls running in this process (dropped at the
    call's end: an event for the call after that, a callback's, gets a key of its own for the same call)."""
    pending: dict[str, tuple[str, bytes, str]] = field(default_factory=dict)
    """Keys made but not yet on disk (written in the writer's transaction before the events they seal): key id
    → (call id, key, created_at)."""
    pending_refs: dict[str, str] = field(default_factory=dict)
    """Key id → the caller pseudonym learnt for it, to write on its row."""
    unconfirmed: dict[str, tuple[str, bytes, str]] = field(default_factory=dict)
    """Keys written in the transaction now open: made pending again if it is rolled back."""

    def caller_ref(self, number: str) -> str | None:
        """The pseudonym of a number: None unless it reads as a phone number (withheld, a SIP name), as the KPIs
        count only those as callers (ivr.kpi.measures.normalise_number)."""
        n = normalise(number, self.region)
        if not n.startswith("+"):
            return None
        return REF + hmac.new(self.pseudonym_key, n.encode(), hashlib.sha256).hexdigest()[:32]

    def _key(self, owner: str) -> tuple[str, bytes]:
        got = self.keys.get(owner)
        if got is None:
            key_id, key = secrets.token_hex(12), AESGCM.generate_key(bit_length=256)
            got = self.keys[owner] = (key_id, key)
            self.pending[key_id] = (owner, key, datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        return got

    def evict(self, call_id: str) -> None:
        """The call ended: its key is on disk and needed here no more (memory stays flat over months)."""
        self.keys.pop(call_id, None)

    def seal_data(self, type: str, call_id: str | None, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` with its personal fields sealed (and ``caller_ref`` added where it names the caller)."""
        fields = personal_fields(type, data)
        if not fields:
            return data
        owner = call_id or "day-" + datetime.now(UTC).date().isoformat()  # outside a call: one key per day
        out = dict(data)
        key_id, key = self._key(owner)
        subject = _match(SUBJECT, type)
        if subject and isinstance(out.get(subject), str):
            ref = self.caller_ref(out[subject])
            if ref is not None:
                out["caller_ref"] = ref
                self.pending_refs.setdefault(key_id, ref)
        for name in fields:
            value = out.get(name)
            if value is None or value == "" or (isinstance(value, str) and value.startswith(SEALED)):
                continue
            out[name] = seal(key_id, key, name, value)
        return out

    def seal_value(self, call_id: str | None, name: str, value: object) -> str:
        """One value sealed with its call's key (a callback's data for the agent): erased with the call's
        personal data, by retention or request. Written to disk by the next ``flush``."""
        key_id, key = self._key(call_id or "day-" + datetime.now(UTC).date().isoformat())
        return seal(key_id, key, name, value)

    async def flush(self, db: aiosqlite.Connection) -> None:
        """Write the keys made since the last commit (inside the writer's transaction, before the events they
        seal). A key whose id was erased meanwhile stays unwritten: what it sealed is erased too."""
        pending, self.pending = self.pending, {}
        refs, self.pending_refs = self.pending_refs, {}
        self.unconfirmed.update(pending)
        try:
            for key_id, (owner, key, created) in pending.items():
                await db.execute("INSERT OR IGNORE INTO privacy_keys (id, call_id, key, created_at) VALUES (?,?,?,?)",
                                 (key_id, owner, key, created))
            for key_id, ref in refs.items():
                await db.execute("UPDATE privacy_keys SET caller_ref=? WHERE id=? AND caller_ref IS NULL",
                                 (ref, key_id))
        except BaseException:
            self.pending.update(pending)
            self.pending_refs.update(refs)
            raise

    def committed(self, ok: bool) -> None:
        """The writer's transaction ended: its keys are on disk, or (``ok`` False) to be written again."""
        if not ok:
            self.pending.update(self.unconfirmed)
        self.unconfirmed = {}

    def forget(self, call_ids: Iterable[str]) -> None:
        """Their keys were erased: events of these calls from now on get new keys (erased with the call's next
        erasure, or by retention)."""
        for c in call_ids:
            self.keys.pop(c, None)


def seal(key_id: str, key: bytes, name: str, value: object) -> str:
    nonce = secrets.token_bytes(12)
    plain = json.dumps(value, default=str, separators=(",", ":")).encode()
    box = AESGCM(key).encrypt(nonce, plain, f"{key_id}/{name}".encode())
    return f"{SEALED}{key_id}:{base64.urlsafe_b64encode(nonce + box).decode().rstrip('=')}"


def unseal(value: object, name: str, keys: Mapping[str, bytes | None]) -> object:
    """A sealed value opened with its key, ``ERASED`` when the key is gone; anything else as it is."""
    if not isinstance(value, str) or not value.startswith(SEALED):
        return value
    key_id, _, text = value[len(SEALED):].rpartition(":")
    key = keys.get(key_id)
    if key is None:
        return ERASED
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    try:
        plain = AESGCM(key).decrypt(raw[:12], raw[12:], f"{key_id}/{name}".encode())
    except Exception:  # cryptography's InvalidTag: not this key's (a copy from elsewhere)
        return ERASED
    return json.loads(plain)


def unseal_data(data: dict[str, Any], keys: Mapping[str, bytes | None]) -> dict[str, Any]:
    if not any(isinstance(v, str) and v.startswith(SEALED) for v in data.values()):
        return data
    return {k: unseal(v, k, keys) for k, v in data.items()}


class KeyRing(dict[str, bytes | None]):
    """The keys of a log as a reader sees them, fetched by id on first use (a plain sqlite3 connection)."""

    def __init__(self, db: Any) -> None:
        super().__init__()
        self.db = db

    def __missing__(self, key_id: str) -> bytes | None:
        try:
            row = self.db.execute("SELECT key FROM privacy_keys WHERE id=?", (key_id,)).fetchone()
        except Exception:  # a log from before privacy_keys: nothing sealed in it
            row = None
        key = bytes(row[0]) if row and row[0] is not None else None
        self[key_id] = key
        return key

    def get(self, key_id: str, default: bytes | None = None) -> bytes | None:  # type: ignore[override]
        return self[key_id]
