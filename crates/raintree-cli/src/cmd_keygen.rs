//! `raintree keygen`: a fresh Ed25519 identity.

use raintree::transport::Identity;

/// Prints a new secret key and its address as JSON.
pub fn run() {
    let id = Identity::generate();
    let out = serde_json::json!({
        "key": hex::encode(id.secret_bytes()),
        "public_key": hex::encode(id.public_key()),
        "address": id.address().to_hex(),
    });
    println!("{out}");
}
