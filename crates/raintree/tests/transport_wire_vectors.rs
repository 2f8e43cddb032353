//! Recomputes every test vector of docs/WIRE.md (lines `name: hex`) and fails if the document
//! and the code disagree, so a wire change must update the document.

use std::collections::BTreeMap;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use raintree::proto::wire::{self, Message, MessageId};
use raintree::transport::framing::{
    encode_frame, Opener, Sealer, Session, MAX_NOISE_MESSAGE, TAG_LEN,
};
use raintree::transport::handshake::{
    signed_payload, verify_payload, NOISE_PARAMS, SIGNATURE_PREFIX,
};
use raintree::transport::Identity;

fn seq(start: u8) -> [u8; 32] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

fn framed(noise_msg: &[u8]) -> Vec<u8> {
    let mut v = (noise_msg.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(noise_msg);
    v
}

struct Side {
    identity: Identity,
    static_secret: [u8; 32],
    ephemeral_secret: [u8; 32],
}

fn builder<'a>(side: &'a Side) -> snow::Builder<'a> {
    snow::Builder::new(NOISE_PARAMS.parse().unwrap())
        .local_private_key(&side.static_secret)
        .unwrap()
        .fixed_ephemeral_key_for_testing_only(&side.ephemeral_secret)
}

/// The counter of the later transport message in the vectors: two non-zero bytes, so the
/// byte order of the nonce shows.
const LATER_COUNTER: u64 = 0x0102;

/// Runs the XX handshake with fixed keys; returns (msg1, msg2, msg3, initiator static
/// public, responder static public, first initiator transport message carrying `frame`,
/// initiator transport message number [`LATER_COUNTER`] carrying `later`).
fn transcript(i: &Side, r: &Side, first: &Message, later: &[u8]) -> [Vec<u8>; 7] {
    // First pass learns each side's static public key (X25519 of its secret) from the peer.
    let statics = run(i, r, None, first, later);
    run(
        i,
        r,
        Some((statics[3].clone(), statics[4].clone())),
        first,
        later,
    )
}

fn run(
    i: &Side,
    r: &Side,
    statics: Option<(Vec<u8>, Vec<u8>)>,
    first: &Message,
    later: &[u8],
) -> [Vec<u8>; 7] {
    let frame = &encode_frame(first)[..];
    let mut hi = builder(i).build_initiator().unwrap();
    let mut hr = builder(r).build_responder().unwrap();
    let (pi, pr) = match &statics {
        Some((si, sr)) => (
            signed_payload(&i.identity, &si[..].try_into().unwrap()),
            signed_payload(&r.identity, &sr[..].try_into().unwrap()),
        ),
        None => (vec![], vec![]),
    };
    let mut buf = vec![0u8; MAX_NOISE_MESSAGE];
    let mut out = vec![0u8; MAX_NOISE_MESSAGE];
    let n = hi.write_message(&[], &mut buf).unwrap();
    let m1 = buf[..n].to_vec();
    assert_eq!(hr.read_message(&m1, &mut out).unwrap(), 0);
    let n = hr.write_message(&pr, &mut buf).unwrap();
    let m2 = buf[..n].to_vec();
    let got = hi.read_message(&m2, &mut out).unwrap();
    let r_static = hi.get_remote_static().unwrap().to_vec();
    if statics.is_some() {
        verify_payload(&out[..got], &r_static).unwrap();
    }
    let n = hi.write_message(&pi, &mut buf).unwrap();
    let m3 = buf[..n].to_vec();
    let got = hr.read_message(&m3, &mut out).unwrap();
    let i_static = hr.get_remote_static().unwrap().to_vec();
    if statics.is_some() {
        verify_payload(&out[..got], &i_static).unwrap();
    }
    let ti = Arc::new(Session::from_handshake(hi).unwrap());
    let tr = Arc::new(Session::from_handshake(hr).unwrap());
    // The first message as a connection's writer makes it, and read back by its reader.
    let mut sealer = Sealer::new(Arc::clone(&ti), 1024);
    sealer.push(first.clone()).unwrap();
    let mut sealed = BytesMut::new();
    sealer.seal_into(&mut sealed).unwrap();
    assert_eq!(sealed.len(), 2 + frame.len() + TAG_LEN);
    let t1 = sealed[2..].to_vec();
    let mut opener = Opener::new(Arc::clone(&tr), 1024);
    opener.open(BytesMut::from(&t1[..])).unwrap();
    let (back, len) = opener.next_message().unwrap().unwrap();
    assert_eq!(
        (encode_frame(&back).to_vec(), len),
        (frame.to_vec(), frame.len())
    );
    let n = ti.write_message(LATER_COUNTER, later, &mut buf).unwrap();
    let tl = buf[..n].to_vec();
    let back = tr.read_message(LATER_COUNTER, &tl, &mut out).unwrap();
    assert_eq!(&out[..back], later);
    // Under any other counter the message does not open: the counter is the nonce.
    assert!(tr.read_message(LATER_COUNTER + 1, &tl, &mut out).is_err());
    [
        framed(&m1),
        framed(&m2),
        framed(&m3),
        i_static,
        r_static,
        framed(&t1),
        framed(&tl),
    ]
}

fn compute() -> BTreeMap<&'static str, String> {
    let i = Side {
        identity: Identity::from_secret_bytes(&seq(0x01)),
        static_secret: seq(0x41),
        ephemeral_secret: seq(0x61),
    };
    let r = Side {
        identity: Identity::from_secret_bytes(&seq(0x21)),
        static_secret: seq(0x81),
        ephemeral_secret: seq(0xa1),
    };
    let direct = Message::Direct {
        id: MessageId {
            origin: i.identity.address(),
            nonce: 0x0102_0304_0506_0708,
        },
        payload: Bytes::from_static(b"hello raintree"),
    };
    let goodbye = Message::Goodbye {
        reason: "shutdown".into(),
    };
    let frame = encode_frame(&direct);
    let [m1, m2, m3, i_static, r_static, t1, t258] =
        transcript(&i, &r, &direct, &encode_frame(&goodbye));
    let i_static: [u8; 32] = i_static.try_into().unwrap();
    let mut sig_msg = SIGNATURE_PREFIX.to_vec();
    sig_msg.extend_from_slice(&i_static);
    let mut v = BTreeMap::new();
    let mut put = |k: &'static str, bytes: &[u8]| {
        v.insert(k, hex::encode(bytes));
    };
    put("protocol-name", NOISE_PARAMS.as_bytes());
    put("signature-prefix", SIGNATURE_PREFIX);
    put("initiator-identity-secret", &i.identity.secret_bytes());
    put("initiator-identity-public", &i.identity.public_key());
    put("initiator-address", &i.identity.address().0);
    put("initiator-static-secret", &i.static_secret);
    put("initiator-static-public", &i_static);
    put("initiator-ephemeral-secret", &i.ephemeral_secret);
    put("initiator-signed-message", &sig_msg);
    put("initiator-signature", &i.identity.sign(&sig_msg));
    put(
        "initiator-handshake-payload",
        &signed_payload(&i.identity, &i_static),
    );
    put("responder-identity-secret", &r.identity.secret_bytes());
    put("responder-identity-public", &r.identity.public_key());
    put("responder-address", &r.identity.address().0);
    put("responder-static-secret", &r.static_secret);
    put("responder-static-public", &r_static);
    put("responder-ephemeral-secret", &r.ephemeral_secret);
    put("handshake-message-1", &m1);
    put("handshake-message-2", &m2);
    put("handshake-message-3", &m3);
    put("envelope-direct", &wire::encode(&direct));
    put("frame-direct", &frame);
    put("transport-message-1", &t1);
    put("transport-message-258", &t258);
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&LATER_COUNTER.to_be_bytes());
    put("transport-nonce-258", &nonce);
    put("envelope-goodbye", &wire::encode(&goodbye));
    let gossip_id = MessageId {
        origin: i.identity.address(),
        nonce: 0x0102_0304_0506_0708,
    };
    let gossip_payload = b"hello raintree";
    let hash = wire::payload_hash(gossip_payload);
    let signed = wire::signed_bytes(
        &gossip_id,
        1_700_000_000_000_000,
        wire::Strategy::Exact,
        &hash,
    );
    let gossip_sig = i.identity.sign(&signed);
    let gossip = Message::Gossip(wire::Gossip {
        id: gossip_id,
        level_or_range: 3,
        strategy: wire::Strategy::Exact,
        route: wire::Route::Tree,
        origin_time_us: 1_700_000_000_000_000,
        hops: 1,
        payload: Bytes::from_static(gossip_payload),
        signature: Some(std::sync::Arc::new(wire::OriginSignature {
            public_key: i.identity.public_key(),
            signature: gossip_sig,
        })),
    });
    put("broadcast-signature-prefix", wire::SIGNATURE_DOMAIN);
    put("gossip-payload-sha256", &hash);
    put("gossip-signed-bytes", &signed);
    put("gossip-signature", &gossip_sig);
    put("envelope-gossip", &wire::encode(&gossip));
    put("frame-goodbye", &encode_frame(&goodbye));
    v
}

fn documented() -> BTreeMap<String, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/WIRE.md");
    let text = std::fs::read_to_string(path).expect("docs/WIRE.md");
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(": ")?;
            let ok_key = !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            let ok_hex = !v.is_empty() && v.chars().all(|c| c.is_ascii_hexdigit());
            (ok_key && ok_hex).then(|| (k.to_string(), v.to_lowercase()))
        })
        .collect()
}

#[test]
fn every_vector_in_wire_md_matches_the_code() {
    let computed = compute();
    let doc = documented();
    let mut bad = Vec::new();
    for (k, v) in &computed {
        match doc.get(*k) {
            Some(d) if d == v => {}
            Some(d) => bad.push(format!("{k}: document has {d}, code computes {v}")),
            None => bad.push(format!("{k}: missing from the document")),
        }
    }
    for k in doc.keys() {
        if !computed.contains_key(k.as_str()) {
            bad.push(format!("{k}: in the document but not checked"));
        }
    }
    if !bad.is_empty() {
        let all: Vec<String> = computed.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        panic!(
            "docs/WIRE.md disagrees with the code:\n{}\n\nComputed vectors:\n{}",
            bad.join("\n"),
            all.join("\n")
        );
    }
}

#[test]
fn the_documented_frame_decodes_to_the_documented_message() {
    let doc = documented();
    let frame = hex::decode(&doc["frame-direct"]).unwrap();
    let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - 4);
    let msg = wire::decode(Bytes::from(frame[4..].to_vec()), 1024).unwrap();
    match msg {
        Message::Direct { id, payload } => {
            assert_eq!(id.nonce, 0x0102_0304_0506_0708);
            assert_eq!(hex::encode(id.origin.0), doc["initiator-address"]);
            assert_eq!(&payload[..], b"hello raintree");
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// Fixed-key handshake states, finished: (initiator, responder).
fn finished_handshake() -> (snow::HandshakeState, snow::HandshakeState) {
    let side = |id: u8, s: u8, e: u8| Side {
        identity: Identity::from_secret_bytes(&seq(id)),
        static_secret: seq(s),
        ephemeral_secret: seq(e),
    };
    let (i, r) = (side(0x01, 0x41, 0x61), side(0x21, 0x81, 0xa1));
    let mut hi = builder(&i).build_initiator().unwrap();
    let mut hr = builder(&r).build_responder().unwrap();
    let (mut buf, mut out) = (vec![0u8; 1024], vec![0u8; 1024]);
    for step in 0..3 {
        let (w, rd) = if step == 1 {
            (&mut hr, &mut hi)
        } else {
            (&mut hi, &mut hr)
        };
        let n = w.write_message(&[], &mut buf).unwrap();
        rd.read_message(&buf[..n], &mut out).unwrap();
    }
    (hi, hr)
}

#[test]
fn sealing_with_the_split_keys_matches_snows_transport_state() {
    // The same transcript twice: once through snow's own transport state, once through the
    // keys the connection takes out of snow. Both directions, several counters.
    let (si, sr) = finished_handshake();
    let (snow_i, snow_r) = (
        si.into_stateless_transport_mode().unwrap(),
        sr.into_stateless_transport_mode().unwrap(),
    );
    let (ri, rr) = finished_handshake();
    let (ours_i, ours_r) = (
        Session::from_handshake(ri).unwrap(),
        Session::from_handshake(rr).unwrap(),
    );
    let plain = b"the same bytes either way";
    let (mut a, mut b) = (vec![0u8; 64], vec![0u8; 64]);
    for counter in [0u64, 1, 258, 1 << 40] {
        let n = snow_i.write_message(counter, plain, &mut a).unwrap();
        let m = ours_i.write_message(counter, plain, &mut b).unwrap();
        assert_eq!(a[..n], b[..m], "initiator, counter {counter}");
        let got = ours_r.read_message(counter, &a[..n], &mut b).unwrap();
        assert_eq!(&b[..got], plain);
        let n = snow_r.write_message(counter, plain, &mut a).unwrap();
        let m = ours_r.write_message(counter, plain, &mut b).unwrap();
        assert_eq!(a[..n], b[..m], "responder, counter {counter}");
        let got = snow_i.read_message(counter, &b[..m], &mut a).unwrap();
        assert_eq!(&a[..got], plain);
    }
    // Noise reserves the last counter.
    assert!(ours_i.write_message(u64::MAX, plain, &mut b).is_err());
}
