//! Bearer tokens as the server keeps them (their SHA-256, compared in
//! constant time), and the duration parser every settings file shares: a
//! leaf the configuration, the client list and `[oauth]` all read.

use std::time::Duration;

/// The SHA-256 digest of a bearer token: what the server keeps and
/// compares, so that neither a config file nor the process holds the token
/// itself, and a comparison takes the same time whatever the token's length.
///
/// Equality is constant-time too: a table of clients keyed by digest
/// (the `clients` module) finds a token's client by hash, then compares the
/// digests without an early exit. What a timing could tell is how much of
/// the stored digest a guess's digest shares, which gives no way to a
/// token whose digest matches (SHA-256 has no known preimages).
#[derive(Clone, Copy)]
pub struct TokenDigest(pub [u8; 32]);

impl PartialEq for TokenDigest {
    fn eq(&self, other: &TokenDigest) -> bool {
        self.0
            .iter()
            .zip(&other.0)
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}

impl Eq for TokenDigest {}

impl std::hash::Hash for TokenDigest {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(&self.0);
    }
}

impl TokenDigest {
    /// The digest of `token`.
    pub fn of(token: &str) -> TokenDigest {
        use sha2::Digest;
        TokenDigest(sha2::Sha256::digest(token.as_bytes()).into())
    }

    /// Parses 64 hex digits.
    ///
    /// # Errors
    ///
    /// A message naming what is accepted.
    pub fn from_hex(text: &str) -> Result<TokenDigest, String> {
        let text = text.trim();
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return Err(format!(
                "{} characters: accepted 64 hex digits (the SHA-256 of the token; `toolplane token hash` prints it)",
                bytes.len()
            ));
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let hex = std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok());
            out[i] = hex.ok_or_else(|| {
                "not hex: accepted 64 hex digits (the SHA-256 of the token; `toolplane token hash` prints it)"
                    .to_string()
            })?;
        }
        Ok(TokenDigest(out))
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `given` is the token: its digest compared without an early
    /// exit, so the time taken says nothing of where they differ.
    pub fn matches(&self, given: &str) -> bool {
        TokenDigest::of(given) == *self
    }
}

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenDigest(..)")
    }
}

/// Parses a duration (`10s`, `5m`) within `min ..= max`.
///
/// # Errors
///
/// A message naming the value and the accepted range.
pub fn parse_duration_in(text: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration ({e}): accepted e.g. \"10s\""))?;
    if d < min || d > max {
        return Err(format!(
            "{text:?} is out of range: accepted {} ..= {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}
