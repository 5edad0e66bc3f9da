//! Who may use the server: the bearer keys of `MOA_SERVE_KEY` (one, or a comma-separated list),
//! compared in constant time, and the rule that a server reachable from other machines has keys
//! (or was started with `--insecure`). `/health` is open, so that load balancers can probe it
//! without a key; it says nothing but "ok".

use std::net::SocketAddr;

use sha2::{Digest, Sha256};

pub const KEY_VAR: &str = "MOA_SERVE_KEY";

/// The accepted keys, kept only as SHA-256 digests: comparing digests takes the same time
/// whatever the key's length, and the keys themselves stay out of memory dumps of this struct.
#[derive(Clone, Default)]
pub struct Keys {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} configured)", self.digests.len())
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(bytes));
    out
}

impl Keys {
    /// From the value of `MOA_SERVE_KEY`: comma-separated, blanks trimmed, empty entries ignored.
    pub fn parse(value: &str) -> Keys {
        Keys {
            digests: value
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(|k| digest(k.as_bytes()))
                .collect(),
        }
    }

    pub fn from_env() -> Keys {
        std::env::var(KEY_VAR)
            .map(|v| Keys::parse(&v))
            .unwrap_or_default()
    }

    pub fn required(&self) -> bool {
        !self.digests.is_empty()
    }

    /// Whether an `Authorization` header value carries one of the keys. Every key is compared,
    /// each in constant time, so the time taken does not say which key nearly matched.
    pub fn allows(&self, authorization: Option<&[u8]>) -> bool {
        if !self.required() {
            return true;
        }
        let Some(token) = authorization.and_then(bearer) else {
            return false;
        };
        let given = digest(token);
        let mut ok = 0u8;
        for d in &self.digests {
            let diff = d
                .iter()
                .zip(given.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            ok |= u8::from(diff == 0);
        }
        ok == 1
    }
}

/// The token of `Bearer TOKEN` (the scheme is case-insensitive, as HTTP says).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// Listening beyond this machine without a key would hand the providers' keys (and their bills)
/// to anyone who can reach the port.
pub fn check_exposure(addr: SocketAddr, keys: &Keys, insecure: bool) -> Result<(), String> {
    if addr.ip().is_loopback() || keys.required() || insecure {
        return Ok(());
    }
    Err(format!(
        "refusing to listen on {addr} without a key: anyone who can reach it would spend your provider keys. \
         Set {KEY_VAR} (one key or a comma-separated list) so that clients must send it as a bearer token, \
         listen on 127.0.0.1, or pass --insecure if something in front of moa checks who may connect"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_as_bearer_tokens() {
        let k = Keys::parse(" alpha , beta,,");
        assert!(k.required());
        assert!(k.allows(Some(b"Bearer alpha")));
        assert!(k.allows(Some(b"bearer beta")));
        assert!(!k.allows(Some(b"Bearer alph")));
        assert!(!k.allows(Some(b"Bearer alphaa")));
        assert!(!k.allows(Some(b"alpha")));
        assert!(!k.allows(Some(b"Bearer ")));
        assert!(!k.allows(None));
        assert!(Keys::parse("").allows(None));
        assert_eq!(format!("{k:?}"), "Keys(2 configured)");
    }

    #[test]
    fn exposure_needs_a_key_or_insecure() {
        let open: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let none = Keys::default();
        assert!(check_exposure(local, &none, false).is_ok());
        let e = check_exposure(open, &none, false).unwrap_err();
        assert!(e.contains(KEY_VAR) && e.contains("--insecure"), "{e}");
        assert!(check_exposure(open, &none, true).is_ok());
        assert!(check_exposure(open, &Keys::parse("k"), false).is_ok());
    }
}
