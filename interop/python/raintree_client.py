"""An independent raintree wire client, written from docs/WIRE.md and raintree.proto only.

Layers (WIRE.md section 1):
  TCP / u16 BE length || Noise message / Noise_XX_25519_AESGCM_SHA256 /
  transport plaintexts form a byte stream of frames: u32 BE length || protobuf Envelope.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import time
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from noise.connection import Keypair, NoiseConnection

PROTOCOL_NAME = b"Noise_XX_25519_AESGCM_SHA256"
SIGNATURE_PREFIX = b"raintree-noise-static-key:"
# WIRE 6.1: the prefix of the bytes an originator signs for each broadcast.
BROADCAST_PREFIX = b"raintree-broadcast-v1:"
MAX_PLAINTEXT = 65535 - 16  # WIRE.md 4: a plaintext holds at most 65,519 bytes
DEFAULT_MAX_PAYLOAD = 4 * 1024 * 1024


def transport_nonce(counter: int) -> bytes:
    """WIRE.md 4: the AES-GCM nonce of a transport message, 32 zero bits || counter big-endian."""
    return bytes(4) + counter.to_bytes(8, "big")

STRATEGY_REFERENCE, STRATEGY_EXACT = 0, 1
ROUTE_TREE, ROUTE_RING_LEFT, ROUTE_RING_RIGHT, ROUTE_CLEANUP, ROUTE_RESEND = range(5)

BODY_FIELDS = {1: "gossip", 2: "ack", 3: "igyw", 4: "igyw_reply", 5: "direct",
               6: "request", 7: "response", 8: "goodbye"}
BODY_NUMBERS = {v: k for k, v in BODY_FIELDS.items()}


class WireError(Exception):
    pass


# --------------------------------------------------------------------------- identities (WIRE 2)

def raw_public(key) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def address_of(ed25519_public: bytes) -> bytes:
    """First 20 bytes of SHA-256 of the 32-byte public key."""
    return hashlib.sha256(ed25519_public).digest()[:20]


class Identity:
    def __init__(self, seed: bytes | None = None):
        self.seed = seed if seed is not None else os.urandom(32)
        self.key = Ed25519PrivateKey.from_private_bytes(self.seed)
        self.public = raw_public(self.key.public_key())
        self.address = address_of(self.public)

    def sign_static(self, static_public: bytes) -> bytes:
        return self.key.sign(SIGNATURE_PREFIX + static_public)

    def handshake_payload(self, static_public: bytes) -> bytes:
        return encode_handshake_payload(self.public, self.sign_static(static_public))

    def sign_broadcast(self, mid: "MessageId", origin_time_us: int, strategy: int,
                       payload: bytes) -> bytes:
        return self.key.sign(broadcast_signed_bytes(mid, origin_time_us, strategy, payload))


def broadcast_signed_bytes(mid: "MessageId", origin_time_us: int, strategy: int,
                           payload: bytes) -> bytes:
    """WIRE 6.1: prefix, origin, nonce and time (u64 big-endian), strategy byte, SHA-256."""
    return (BROADCAST_PREFIX + mid.origin + struct.pack(">QQB", mid.nonce, origin_time_us, strategy)
            + hashlib.sha256(payload).digest())


def verify_broadcast(d: dict) -> bool:
    """WIRE 6.1 receiver checks of a decoded gossip (strict verification by the library)."""
    key, sig = d.get("origin_key", b""), d.get("signature", b"")
    if len(key) != 32 or len(sig) != 64 or address_of(key) != d["id"].origin:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(
            sig, broadcast_signed_bytes(d["id"], d["origin_time_us"], d["strategy"], d["payload"]))
        return True
    except InvalidSignature:
        return False


# ------------------------------------------------------------------------ protobuf (hand-coded)

def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def f_varint(num: int, v: int) -> bytes:
    # proto3: default (0/false) scalar fields are not emitted
    return varint(num << 3 | 0) + varint(v) if v else b""


def f_bytes(num: int, v: bytes, always: bool = False) -> bytes:
    return varint(num << 3 | 2) + varint(len(v)) + v if (v or always) else b""


def f_fixed64(num: int, v: int) -> bytes:
    return varint(num << 3 | 1) + struct.pack("<Q", v) if v else b""


def read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf):
            raise WireError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise WireError("varint too long")


def parse_fields(buf: bytes) -> list[tuple[int, int, object]]:
    """Generic protobuf decoder: [(field number, wire type, value)]."""
    out, i = [], 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = read_varint(buf, i)
        elif wt == 1:
            if i + 8 > len(buf):
                raise WireError("truncated fixed64")
            v = struct.unpack_from("<Q", buf, i)[0]
            i += 8
        elif wt == 2:
            n, i = read_varint(buf, i)
            if i + n > len(buf):
                raise WireError("truncated length-delimited field")
            v = bytes(buf[i:i + n])
            i += n
        elif wt == 5:
            if i + 4 > len(buf):
                raise WireError("truncated fixed32")
            v = struct.unpack_from("<I", buf, i)[0]
            i += 4
        else:
            raise WireError(f"unsupported wire type {wt}")
        out.append((num, wt, v))
    return out


def last_fields(buf: bytes) -> dict[int, object]:
    """Protobuf semantics: for a scalar the last occurrence wins."""
    return {num: v for num, _wt, v in parse_fields(buf)}


def encode_handshake_payload(identity_key: bytes, signature: bytes) -> bytes:
    return f_bytes(1, identity_key, True) + f_bytes(2, signature, True)


def decode_handshake_payload(buf: bytes) -> tuple[bytes, bytes]:
    f = last_fields(buf)
    return f.get(1, b""), f.get(2, b"")


@dataclass
class MessageId:
    origin: bytes
    nonce: int

    def encode(self) -> bytes:
        return f_bytes(1, self.origin, True) + f_fixed64(2, self.nonce)

    @staticmethod
    def decode(buf: bytes) -> "MessageId":
        f = last_fields(buf)
        origin = f.get(1, b"")
        if len(origin) != 20:
            raise WireError("MessageId origin is not 20 bytes")
        return MessageId(origin, f.get(2, 0))


def envelope(kind: str, body: bytes) -> bytes:
    # A oneof member is always emitted, even when its message is empty.
    return f_bytes(BODY_NUMBERS[kind], body, always=True)


def enc_gossip(mid: MessageId, level_or_range: int, strategy: int, route: int,
               origin_time_us: int, hops: int, payload: bytes, origin_key: bytes = b"",
               signature: bytes = b"") -> bytes:
    return envelope("gossip", f_bytes(1, mid.encode(), True) + f_varint(2, level_or_range)
                    + f_varint(3, strategy) + f_varint(4, route) + f_varint(5, origin_time_us)
                    + f_varint(6, hops) + f_bytes(7, payload) + f_bytes(8, origin_key)
                    + f_bytes(9, signature))


def enc_ack(mid: MessageId, level_or_range: int) -> bytes:
    return envelope("ack", f_bytes(1, mid.encode(), True) + f_varint(2, level_or_range))


def enc_direct(mid: MessageId, payload: bytes) -> bytes:
    return envelope("direct", f_bytes(1, mid.encode(), True) + f_bytes(2, payload))


def enc_request(req_id: int, payload: bytes) -> bytes:
    return envelope("request", f_varint(1, req_id) + f_bytes(2, payload))


def enc_response(req_id: int, payload: bytes) -> bytes:
    return envelope("response", f_varint(1, req_id) + f_bytes(2, payload))


def enc_goodbye(reason: str) -> bytes:
    return envelope("goodbye", f_bytes(1, reason.encode()))


def decode_envelope(buf: bytes) -> tuple[str, dict]:
    """Returns (kind, fields) with MessageId decoded and names as in raintree.proto."""
    fields = parse_fields(buf)
    body = [(n, wt, v) for n, wt, v in fields if n in BODY_FIELDS]
    if not body:
        raise WireError("envelope without a body")
    num, wt, raw = body[-1]
    if wt != 2:
        raise WireError("envelope body is not length-delimited")
    kind = BODY_FIELDS[num]
    f = last_fields(raw)
    d: dict = {}
    if kind in ("gossip", "ack", "igyw", "igyw_reply", "direct"):
        if 1 not in f:
            raise WireError(f"{kind} without a MessageId")
        d["id"] = MessageId.decode(f[1])
    if kind == "gossip":
        d.update(level_or_range=f.get(2, 0), strategy=f.get(3, 0), route=f.get(4, 0),
                 origin_time_us=f.get(5, 0), hops=f.get(6, 0), payload=f.get(7, b""),
                 origin_key=f.get(8, b""), signature=f.get(9, b""))
        if d["strategy"] not in (0, 1) or d["route"] not in range(5):
            raise WireError("enum value out of range")
        if (len(d["origin_key"]), len(d["signature"])) not in ((0, 0), (32, 64)):
            raise WireError("origin_key / signature not 32 / 64 bytes")
    elif kind == "ack":
        d["level_or_range"] = f.get(2, 0)
    elif kind == "igyw_reply":
        d["want"] = bool(f.get(2, 0))
    elif kind == "direct":
        d["payload"] = f.get(2, b"")
    elif kind in ("request", "response"):
        d.update(id=f.get(1, 0), payload=f.get(2, b""))
    elif kind == "goodbye":
        d["reason"] = f.get(1, b"").decode("utf-8")
    return kind, d


def frame(env: bytes) -> bytes:
    return struct.pack(">I", len(env)) + env


# ------------------------------------------------------------------------------ handshake (WIRE 3)

def verify_identity_payload(payload: bytes, remote_static: bytes,
                            expected_address: bytes | None) -> bytes:
    """Section 3.2 checks. Returns the proven address."""
    key, sig = decode_handshake_payload(payload)
    if len(key) != 32 or len(sig) != 64:
        raise WireError("handshake payload: bad key or signature length")
    try:
        pub = Ed25519PublicKey.from_public_bytes(key)
        pub.verify(sig, SIGNATURE_PREFIX + remote_static)
    except (InvalidSignature, ValueError) as e:
        raise WireError(f"handshake payload: signature does not verify ({e!r})")
    addr = address_of(key)
    if expected_address is not None and addr != expected_address:
        raise WireError(f"peer proved address {addr.hex()}, expected {expected_address.hex()}")
    return addr


def new_noise(initiator: bool, static_secret: bytes, ephemeral_secret: bytes | None = None):
    nc = NoiseConnection.from_name(PROTOCOL_NAME)
    nc.set_as_initiator() if initiator else nc.set_as_responder()
    nc.set_keypair_from_private_bytes(Keypair.STATIC, static_secret)
    if ephemeral_secret is not None:  # test vectors only
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nc.set_keypair_from_private_bytes(Keypair.EPHEMERAL, ephemeral_secret)
            nc.start_handshake()
    else:
        nc.start_handshake()
    return nc


def x25519_public(secret: bytes) -> bytes:
    return raw_public(X25519PrivateKey.from_private_bytes(secret).public_key())


# ---------------------------------------------------------------------------------- connection

class Closed(WireError):
    pass


@dataclass
class Connection:
    sock: socket.socket
    noise: NoiseConnection
    peer_address: bytes
    max_payload: int = DEFAULT_MAX_PAYLOAD
    _raw: bytearray = field(default_factory=bytearray)    # socket bytes not yet a Noise message
    _plain: bytearray = field(default_factory=bytearray)  # decrypted stream not yet a frame
    eof: bool = False

    # --- Noise message layer (u16 BE length || message)
    def _recv_noise_message(self, deadline: float) -> bytes | None:
        while True:
            if len(self._raw) >= 2:
                n = struct.unpack_from(">H", self._raw)[0]
                if len(self._raw) >= 2 + n:
                    msg = bytes(self._raw[2:2 + n])
                    del self._raw[:2 + n]
                    return msg
            if self.eof:
                if self._raw:
                    raise WireError("stream ended inside a transport message")
                return None
            self._fill(deadline)

    def _fill(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out waiting for the peer")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("timed out waiting for the peer")
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
        self._raw += data

    # --- frames
    def send_envelope(self, env: bytes) -> None:
        data = frame(env)
        out = bytearray()
        for i in range(0, len(data), MAX_PLAINTEXT):
            ct = self.noise.encrypt(bytes(data[i:i + MAX_PLAINTEXT]))
            out += struct.pack(">H", len(ct)) + ct
        self.sock.sendall(out)

    def send_plaintext_chunks(self, chunks: list[bytes]) -> None:
        """One transport message per chunk: lets a caller split or batch frames arbitrarily."""
        out = bytearray()
        for c in chunks:
            ct = self.noise.encrypt(bytes(c))
            out += struct.pack(">H", len(ct)) + ct
        self.sock.sendall(out)

    def recv_envelope(self, timeout: float = 5.0) -> tuple[str, dict] | None:
        """The next decoded Envelope, or None at a clean end of stream."""
        deadline = time.monotonic() + timeout
        limit = self.max_payload + 1024
        while True:
            if len(self._plain) >= 4:
                n = struct.unpack_from(">I", self._plain)[0]
                if n > limit:
                    raise WireError(f"frame length {n} over the limit")
                if len(self._plain) >= 4 + n:
                    env = bytes(self._plain[4:4 + n])
                    del self._plain[:4 + n]
                    return decode_envelope(env)
            msg = self._recv_noise_message(deadline)
            if msg is None:
                if self._plain:
                    raise WireError("stream ended inside a frame")
                return None
            if len(msg) < 16:
                raise WireError("transport message shorter than 16 bytes")
            self._plain += self.noise.decrypt(msg)

    def recv_kind(self, kind: str, timeout: float = 5.0, skip=()) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            got = self.recv_envelope(max(0.001, deadline - time.monotonic()))
            if got is None:
                raise Closed(f"connection closed while waiting for {kind}")
            if got[0] == kind:
                return got[1]
            if got[0] not in skip:
                raise WireError(f"expected {kind}, got {got[0]}: {got[1]}")

    def goodbye(self, reason: str = "close", linger: float = 2.0) -> list[tuple[str, dict]]:
        """WIRE 5.3: send Goodbye, FIN, read until the peer closes. Returns frames read."""
        self.send_envelope(enc_goodbye(reason))
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        got = []
        deadline = time.monotonic() + linger
        while time.monotonic() < deadline:
            try:
                e = self.recv_envelope(max(0.001, deadline - time.monotonic()))
            except TimeoutError:
                break
            if e is None:
                break
            got.append(e)
        self.close()
        return got

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _send_hs(sock: socket.socket, msg: bytes) -> None:
    sock.sendall(struct.pack(">H", len(msg)) + msg)


def _recv_exact(sock: socket.socket, n: int, deadline: float) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("handshake timed out")
        sock.settimeout(left)
        try:
            d = sock.recv(n - len(buf))
        except socket.timeout:
            raise TimeoutError("handshake timed out")
        if not d:
            raise Closed("peer closed the connection during the handshake")
        buf += d
    return bytes(buf)


def _recv_hs(sock: socket.socket, deadline: float) -> bytes:
    n = struct.unpack(">H", _recv_exact(sock, 2, deadline))[0]
    return _recv_exact(sock, n, deadline)


def dial(host: str, port: int, identity: Identity, expected_address: bytes,
         timeout: float = 5.0, static_secret: bytes | None = None) -> Connection:
    """Dial as Noise initiator; verify the responder proves `expected_address`."""
    deadline = time.monotonic() + timeout
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        static_secret = static_secret or os.urandom(32)  # fresh static per WIRE 3
        static_public = x25519_public(static_secret)
        nc = new_noise(True, static_secret)
        _send_hs(sock, bytes(nc.write_message(b"")))                 # 1: -> e
        hs = nc.noise_protocol.handshake_state
        payload = bytes(nc.read_message(_recv_hs(sock, deadline)))   # 2: <- e, ee, s, es
        remote_static = hs.rs.public_bytes
        proven = verify_identity_payload(payload, remote_static, expected_address)
        _send_hs(sock, bytes(nc.write_message(identity.handshake_payload(static_public))))  # 3
        if not nc.handshake_finished:
            raise WireError("Noise handshake not finished after message 3")
        return Connection(sock, nc, proven)
    except BaseException:
        sock.close()
        raise
