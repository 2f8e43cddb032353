#!/usr/bin/env python3
"""Interop check: an independent Python client (raintree_client.py, written from docs/WIRE.md)
against a real `raintree node`, plus the fixed test vectors of docs/WIRE.md section 7.

    python3 interop/python/interop_test.py --binary target/debug/raintree
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import raintree_client as rt  # noqa: E402
from cryptography.exceptions import InvalidTag  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_WIRE = os.path.normpath(os.path.join(HERE, "..", "..", "docs", "WIRE.md"))

PASSED: list[str] = []


class CheckFailed(Exception):
    pass


def ensure(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def check(name, fn, *args):
    try:
        out = fn(*args)
    except Exception as e:  # noqa: BLE001
        detail = "".join(traceback.format_exception_only(type(e), e)).strip()
        print(f"FAIL {name}: {detail}", flush=True)
        raise SystemExit(f"interop: {len(PASSED)} passed, 1 failed")
    PASSED.append(name)
    print(f"ok   {name}", flush=True)
    return out


# ------------------------------------------------------------------------------- test vectors

def load_vectors(path):
    vec = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.fullmatch(r"([a-z0-9-]+): ([0-9a-f]+)", line.strip())
            if m:
                vec[m.group(1)] = bytes.fromhex(m.group(2))
    for need in ("initiator-identity-secret", "handshake-message-3", "frame-goodbye"):
        ensure(need in vec, f"vector {need} not found in {path}")
    return vec


def eq(vec, name, got):
    ensure(got == vec[name], f"{name}: computed {got.hex()}, document says {vec[name].hex()}")


def vectors_identities(v):
    for side in ("initiator", "responder"):
        ident = rt.Identity(v[f"{side}-identity-secret"])
        eq(v, f"{side}-identity-public", ident.public)
        eq(v, f"{side}-address", ident.address)


def vectors_signature(v):
    ident = rt.Identity(v["initiator-identity-secret"])
    eq(v, "signature-prefix", rt.SIGNATURE_PREFIX)
    ensure(len(rt.SIGNATURE_PREFIX) == 26, "prefix is not 26 bytes")
    spub = rt.x25519_public(v["initiator-static-secret"])
    eq(v, "initiator-static-public", spub)
    eq(v, "initiator-signed-message", rt.SIGNATURE_PREFIX + spub)
    eq(v, "initiator-signature", ident.sign_static(spub))
    eq(v, "initiator-handshake-payload", ident.handshake_payload(spub))
    ensure(len(ident.handshake_payload(spub)) == 100, "canonical payload is not 100 bytes")
    # and the verifier accepts it
    rt.verify_identity_payload(v["initiator-handshake-payload"], spub, ident.address)


def run_vector_handshake(v):
    """Both sides in-process with the document's fixed keys; returns the socket bytes."""
    ini_id = rt.Identity(v["initiator-identity-secret"])
    res_id = rt.Identity(v["responder-identity-secret"])
    ini = rt.new_noise(True, v["initiator-static-secret"], v["initiator-ephemeral-secret"])
    res = rt.new_noise(False, v["responder-static-secret"], v["responder-ephemeral-secret"])
    ini_hs, res_hs = ini.noise_protocol.handshake_state, res.noise_protocol.handshake_state
    pre = lambda m: len(m).to_bytes(2, "big") + bytes(m)  # noqa: E731
    m1 = ini.write_message(b"")
    ensure(res.read_message(bytes(m1)) == b"", "message 1 payload not empty")
    res_spub = rt.x25519_public(v["responder-static-secret"])
    m2 = res.write_message(res_id.handshake_payload(res_spub))
    p2 = ini.read_message(bytes(m2))
    rt.verify_identity_payload(bytes(p2), ini_hs.rs.public_bytes, res_id.address)
    ini_spub = rt.x25519_public(v["initiator-static-secret"])
    m3 = ini.write_message(ini_id.handshake_payload(ini_spub))
    p3 = res.read_message(bytes(m3))
    rt.verify_identity_payload(bytes(p3), res_hs.rs.public_bytes, ini_id.address)
    ensure(ini.handshake_finished and res.handshake_finished, "handshake not finished")
    return ini, res, pre(m1), pre(m2), pre(m3), bytes(p3), res_spub


def vectors_handshake(v):
    eq(v, "protocol-name", rt.PROTOCOL_NAME)
    ini, res, m1, m2, m3, p3, res_spub = run_vector_handshake(v)
    eq(v, "responder-static-public", res_spub)
    ensure(len(m1) == 2 + 32 and len(m2) == 2 + 196 and len(m3) == 2 + 164,
           f"handshake lengths {len(m1)}, {len(m2)}, {len(m3)} differ from section 3's table")
    eq(v, "handshake-message-1", m1)
    eq(v, "handshake-message-2", m2)
    eq(v, "handshake-message-3", m3)
    eq(v, "initiator-handshake-payload", p3)


def vectors_frames(v):
    ini_addr = rt.Identity(v["initiator-identity-secret"]).address
    env = rt.enc_direct(rt.MessageId(ini_addr, 0x0102030405060708), b"hello raintree")
    eq(v, "envelope-direct", env)
    eq(v, "frame-direct", rt.frame(env))
    kind, d = rt.decode_envelope(v["envelope-direct"])
    ensure(kind == "direct" and d["id"].nonce == 0x0102030405060708
           and d["payload"] == b"hello raintree", f"decoding envelope-direct gave {kind} {d}")
    ini, res, *_ = run_vector_handshake(v)
    ct = ini.encrypt(rt.frame(env))
    eq(v, "transport-message-1", len(ct).to_bytes(2, "big") + ct)
    ensure(res.decrypt(ct) == v["frame-direct"], "responder cannot decrypt transport-message-1")
    g = rt.enc_goodbye("shutdown")
    eq(v, "envelope-goodbye", g)
    eq(v, "frame-goodbye", rt.frame(g))


def vectors_later_transport_message(v):
    """Counter 258 shows the nonce's byte order: sealed by the Noise library after 257 other
    messages, and opened here with AES-256-GCM directly under the documented nonce."""
    eq(v, "transport-nonce-258", rt.transport_nonce(258))
    ini, res, *_ = run_vector_handshake(v)
    key = ini.noise_protocol.cipher_state_encrypt.k
    for _ in range(258):
        ini.encrypt(b"")
    ct = ini.encrypt(v["frame-goodbye"])
    eq(v, "transport-message-258", len(ct).to_bytes(2, "big") + ct)
    opened = AESGCM(key).decrypt(v["transport-nonce-258"], ct, b"")
    ensure(opened == v["frame-goodbye"], "transport-message-258 does not open under its nonce")
    little = bytes(4) + (258).to_bytes(8, "little")
    try:
        AESGCM(key).decrypt(little, ct, b"")
        raise CheckFailed("transport-message-258 also opens under a little-endian counter")
    except InvalidTag:
        pass


def vectors_broadcast(v):
    ini = rt.Identity(v["initiator-identity-secret"])
    mid = rt.MessageId(ini.address, 0x0102030405060708)
    t, payload = 1700000000000000, b"hello raintree"
    eq(v, "broadcast-signature-prefix", rt.BROADCAST_PREFIX)
    eq(v, "gossip-payload-sha256", hashlib.sha256(payload).digest())
    eq(v, "gossip-signed-bytes", rt.broadcast_signed_bytes(mid, t, rt.STRATEGY_EXACT, payload))
    sig = ini.sign_broadcast(mid, t, rt.STRATEGY_EXACT, payload)
    eq(v, "gossip-signature", sig)
    env = rt.enc_gossip(mid, 3, rt.STRATEGY_EXACT, rt.ROUTE_TREE, t, 1, payload, ini.public, sig)
    eq(v, "envelope-gossip", env)
    kind, d = rt.decode_envelope(env)
    ensure(kind == "gossip" and rt.verify_broadcast(d), "envelope-gossip does not verify")
    d["payload"] = b"other bytes"
    ensure(not rt.verify_broadcast(d), "a changed payload still verifies")


# ---------------------------------------------------------------------------------- the node

class Node:
    def __init__(self, binary, workdir):
        self.binary = binary
        self.workdir = workdir
        self.proc = None
        self.lines: queue.Queue = queue.Queue()
        self.stderr_path = os.path.join(workdir, "node.stderr")

    def keygen(self):
        out = subprocess.run([self.binary, "keygen"], capture_output=True, text=True, timeout=30)
        ensure(out.returncode == 0, f"raintree keygen exited {out.returncode}: {out.stderr}")
        k = json.loads(out.stdout)
        ensure({"key", "public_key", "address"} <= set(k), f"keygen output {k}")
        ident = rt.Identity(bytes.fromhex(k["key"]))
        ensure(ident.public.hex() == k["public_key"],
               f"seed {k['key']} gives public key {ident.public.hex()}, keygen says {k['public_key']}")
        ensure(rt.address_of(bytes.fromhex(k["public_key"])).hex() == k["address"],
               "SHA-256(public_key)[0..20] differs from keygen's address")
        self.key = k
        return k

    def start(self, timeout=30):
        cfg = os.path.join(self.workdir, "node.toml")
        with open(cfg, "w") as f:
            f.write(f'key = "{self.key["key"]}"\n'
                    'listen = "127.0.0.1:0"\n'
                    'admin = "127.0.0.1:0"\n'
                    'open = true\n'
                    'strategy = "exact"\n')
        self.stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen([self.binary, "node", "--config", cfg],
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True,
                                     env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")})
        threading.Thread(target=self._pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            ensure(left > 0, "no READY line within the timeout")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            ensure(line is not None, f"node exited before READY: {self.tail()}")
            if line.startswith("READY "):
                ready = json.loads(line[len("READY "):])
                ensure(ready.get("address") == self.key["address"], f"READY address {ready}")
                self.ready = ready
                return ready

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def tail(self):
        try:
            with open(self.stderr_path) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def admin(self, method, path, timeout=10):
        host, port = split_addr(self.ready["admin"])
        c = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            c.request(method, path, body=b"" if method == "POST" else None)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


def split_addr(s):
    s = s.removeprefix("http://").rstrip("/")
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


# ------------------------------------------------------------------------------- live checks

def live_handshake(node, me):
    host, port = split_addr(node.ready["listen"])
    conn = rt.dial(host, port, me, bytes.fromhex(node.key["address"]), timeout=5)
    ensure(conn.peer_address.hex() == node.key["address"], "proven address mismatch")
    return conn


def live_wrong_address_refused(node, me):
    """WIRE 3.2: the initiator refuses a responder that does not prove the dialled address."""
    host, port = split_addr(node.ready["listen"])
    try:
        rt.dial(host, port, me, b"\x00" * 20, timeout=5)
    except rt.WireError as e:
        ensure("expected" in str(e), f"unexpected error {e}")
        return
    raise CheckFailed("dial to the wrong address was not refused")


def live_request(conn, req_id, payload, timeout=10):
    conn.send_envelope(rt.enc_request(req_id, payload))
    d = conn.recv_kind("response", timeout, skip=("gossip", "ack", "igyw", "igyw_reply", "direct"))
    ensure(d["id"] == req_id, f"response id {d['id']} != request id {req_id}")
    ensure(d["payload"] == payload, f"response payload ({len(d['payload'])} bytes) differs from "
                                    f"the request's ({len(payload)} bytes)")


def live_unaligned(conn):
    """WIRE 4: frames and transport messages need not align. Two Requests batched in one
    transport message, then one Request split over five transport messages (one of them
    carrying an empty plaintext, a bare 16-byte tag)."""
    a, b, c = (rt.frame(rt.enc_request(i, f"unaligned {i}".encode())) for i in (101, 102, 103))
    conn.send_plaintext_chunks([a + b])
    conn.send_plaintext_chunks([c[:1], c[1:3], b"", c[3:7], c[7:]])
    got = {}
    for _ in range(3):
        d = conn.recv_kind("response", 10)
        got[d["id"]] = d["payload"]
    ensure(got == {i: f"unaligned {i}".encode() for i in (101, 102, 103)}, f"responses {got}")


def live_gossip(conn, me):
    mid = rt.MessageId(me.address, int.from_bytes(os.urandom(8), "little") or 1)
    payload = b"interop gossip " + os.urandom(8).hex().encode()
    t = int(time.time() * 1e6)
    sig = me.sign_broadcast(mid, t, rt.STRATEGY_EXACT, payload)
    # First a forgery (the signature over other bytes, WIRE 6.1): the node must neither ACK
    # nor deliver it. Frames are handled in order, so the first ACK must be the real copy's.
    forged = rt.MessageId(me.address, mid.nonce ^ 1)
    conn.send_envelope(rt.enc_gossip(forged, 1, rt.STRATEGY_EXACT, rt.ROUTE_TREE, t, 1,
                                     payload, me.public, sig))
    # A tree send (route TREE, exact strategy) owning a range of 1: the receiver delivers and
    # has nothing to forward; hops = 1 as an originator's own send (raintree.proto).
    conn.send_envelope(rt.enc_gossip(mid, 1, rt.STRATEGY_EXACT, rt.ROUTE_TREE,
                                     t, 1, payload, me.public, sig))
    d = conn.recv_kind("ack", 10, skip=("igyw", "igyw_reply"))
    ensure(d["id"] == mid, f"ack for {d['id']}, expected {mid}")
    ensure(d["level_or_range"] == 1, f"ack level_or_range {d['level_or_range']} != 1")
    return mid, payload


def live_deliveries(node, mid, payload):
    deadline = time.monotonic() + 10
    while True:
        status, body = node.admin("GET", "/deliveries")
        ensure(status == 200, f"GET /deliveries -> {status} {body[:200]!r}")
        data = json.loads(body)
        items = data if isinstance(data, list) else next(
            (v for v in data.values() if isinstance(v, list)), [])
        for it in items:
            if match_delivery(it, mid):
                return it
        ensure(time.monotonic() < deadline,
               f"delivery {mid.origin.hex()}/{mid.nonce} not in /deliveries: {body[:500]!r}")
        time.sleep(0.1)


def match_delivery(it, mid):
    # Observed shape (not documented): {"origin": hex, "nonce": u64 decimal, "latency_us", "hops"}
    return (isinstance(it, dict) and it.get("origin") == mid.origin.hex()
            and it.get("nonce") == mid.nonce and it.get("hops") == 1)


def live_goodbye(conn):
    got = conn.goodbye("close", linger=3)
    kinds = [k for k, _ in got]
    ensure("goodbye" in kinds, f"node did not answer our Goodbye with its own; got {kinds}")
    ensure(kinds[-1] == "goodbye", f"node sent frames after its Goodbye: {kinds}")
    ensure(conn.eof, "node did not close its side after Goodbye")


def live_shutdown(node):
    status, body = node.admin("POST", "/shutdown")
    ensure(200 <= status < 300, f"POST /shutdown -> {status} {body[:200]!r}")
    try:
        rc = node.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        raise CheckFailed("node did not exit within 20 s of POST /shutdown")
    ensure(rc == 0, f"node exited {rc}: {node.tail()}")


# ------------------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--binary", required=True, help="path to the raintree binary")
    ap.add_argument("--wire", default=DEFAULT_WIRE, help="WIRE.md to take the vectors from")
    args = ap.parse_args()
    if not os.access(args.binary, os.X_OK):
        raise SystemExit(f"interop: {args.binary} is not an executable file")

    v = check("vectors: parse WIRE.md section 7", load_vectors, args.wire)
    check("vectors: identities and addresses (7.1)", vectors_identities, v)
    check("vectors: identity signature and payload (7.2)", vectors_signature, v)
    check("vectors: complete handshake (7.3)", vectors_handshake, v)
    check("vectors: envelopes, frames, transport message 1 (7.4)", vectors_frames, v)
    check("vectors: transport message 258 and its AES-GCM nonce (4, 7.4)",
          vectors_later_transport_message, v)
    check("vectors: signed broadcast (7.5)", vectors_broadcast, v)

    with tempfile.TemporaryDirectory(prefix="raintree-interop-") as tmp:
        node = Node(os.path.abspath(args.binary), tmp)
        try:
            check("node: keygen address = SHA-256(public key)[0..20]", node.keygen)
            check("node: starts and prints READY", node.start)
            me = rt.Identity()
            check("client: refuses a node not proving the dialled address",
                  live_wrong_address_refused, node, me)
            conn = check("live: Noise XX handshake, node identity verified", live_handshake, node, me)
            check("live: Request echoed in Response", live_request, conn, 7, b"ping from python")
            check("live: 200 KiB Request/Response across transport messages",
                  live_request, conn, 8, os.urandom(200 * 1024))
            check("live: frames batched and split across transport messages",
                  live_unaligned, conn)
            mid, payload = check("live: forged Gossip refused, signed Gossip (tree, exact, "
                                 "range 1) acked", live_gossip, conn, me)
            check("live: node lists the gossip in GET /deliveries",
                  live_deliveries, node, mid, payload)
            check("live: Goodbye answered with Goodbye and close", live_goodbye, conn)
            check("node: POST /shutdown, exit 0", live_shutdown, node)
        except SystemExit:
            sys.stderr.write("--- node stderr (tail) ---\n" + node.tail() + "\n")
            raise
        finally:
            node.kill()
    print(f"interop: {len(PASSED)} passed, 0 failed")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    main()
