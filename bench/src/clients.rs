//! Fixtures of the `[[clients]]` check (identity, scope, rate, slot): a
//! client list of `n` clients as `toolplane.toml` gives it, each with a
//! scope of a name and a glob, a rate it never reaches, and in-flight
//! slots it never fills.

use std::sync::Arc;

use toolplane_server::clients::{Client, Directory};

/// The token of client `i`.
pub fn token(i: usize) -> String {
    format!("bench-client-token-{i:06}")
}

/// `n` clients.
pub fn directory(n: usize) -> Directory {
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            "[[clients]]\nname = \"c{i}\"\ntoken_sha256 = \"{}\"\n\
             tools = [\"echo\", \"hash.*\"]\nrate = 1000000000\nburst = 4000000000\n\
             max_inflight = 1000000\n",
            toolplane_server::config::TokenDigest::of(&token(i)).to_hex()
        ));
    }
    let s = toolplane_server::config::Settings::from_toml_str(
        &text,
        std::path::Path::new("bench.toml"),
    )
    .expect("the bench's client list parses");
    Directory::new(&s.clients.expect("a client list"))
}

/// What a call through the HTTP edge and `App::call` does for its client:
/// the token looked up, the tool's scope and rate checked, a slot taken
/// (and given back when the returned slot drops).
pub fn check(d: &Directory, token: &str, tool: &str) -> Arc<Client> {
    let c = d.authenticate(Some(token)).expect("a known token");
    c.admit(tool).expect("in scope and under the rate");
    let slot = futures_util::FutureExt::now_or_never(c.slot())
        .expect("a free slot is taken at once")
        .expect("a free slot");
    drop(slot);
    c
}
