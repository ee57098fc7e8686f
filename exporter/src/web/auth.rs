//! HTTP basic authentication against the web config's bcrypt hashes. A successful check is cached
//! (a salted SHA-256 of the password per user and hash), so a scrape every second costs one bcrypt
//! round once, not every time. Unknown users cost a bcrypt round too, so timing reveals no user names.

use crate::web::config::BcryptHash;
use base64::Engine;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// What a request's `Authorization` header came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthOutcome {
    Allowed,
    /// No credentials, malformed credentials, unknown user or wrong password: all answer 401.
    Denied,
}

/// Credentials sent with a request: `Authorization: Basic base64(user:password)`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub(crate) user: String,
    pub(crate) password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, ..)", self.user)
    }
}

/// Parse a basic `Authorization` header value; `None` for anything else.
pub(crate) fn parse_basic(header: &[u8]) -> Option<Credentials> {
    let header = std::str::from_utf8(header).ok()?.trim();
    let (scheme, encoded) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some(Credentials {
        user: user.to_string(),
        password: password.to_string(),
    })
}

/// The users of one web configuration, with the cache of passwords already verified.
pub struct Authenticator {
    users: BTreeMap<String, BcryptHash>,
    /// Per-process salt of the cache digests, so the cache never holds a password or a plain hash of one.
    salt: [u8; 16],
    verified: Mutex<BTreeMap<String, [u8; 32]>>,
    /// Hashed against when the user is unknown, at the cost of the configured hashes.
    decoy: String,
}

impl Authenticator {
    pub(crate) fn new(users: BTreeMap<String, BcryptHash>) -> Authenticator {
        let cost = users.values().map(BcryptHash::cost).max().unwrap_or(10);
        let mut salt = [0u8; 16];
        // A fixed salt would only weaken the in-memory cache, never the check itself.
        let _ = getrandom_fill(&mut salt);
        let decoy = bcrypt::hash_with_salt("kepler-rs decoy", cost, salt)
            .map(|h| h.format_for_version(bcrypt::Version::TwoY))
            .unwrap_or_default();
        Authenticator {
            users,
            salt,
            verified: Mutex::new(BTreeMap::new()),
            decoy,
        }
    }

    fn digest(&self, user: &str, hash: &BcryptHash, password: &str) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for part in [
            &self.salt[..],
            user.as_bytes(),
            hash.as_str().as_bytes(),
            password.as_bytes(),
        ] {
            ctx.update(&(part.len() as u64).to_le_bytes());
            ctx.update(part);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    /// The answer from the cache, without bcrypt: `Some` when this exact password was verified before.
    pub(crate) fn cached(&self, credentials: &Credentials) -> Option<AuthOutcome> {
        let hash = self.users.get(&credentials.user)?;
        let digest = self.digest(&credentials.user, hash, &credentials.password);
        let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        let known = verified.get(&credentials.user)?;
        let difference = known
            .iter()
            .zip(&digest)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        (difference == 0).then_some(AuthOutcome::Allowed)
    }

    /// The full check (a bcrypt round: tens of milliseconds at cost 10; run it off the event loop).
    pub(crate) fn verify(&self, credentials: Option<&Credentials>) -> AuthOutcome {
        let Some(credentials) = credentials else {
            return AuthOutcome::Denied;
        };
        if self.cached(credentials) == Some(AuthOutcome::Allowed) {
            return AuthOutcome::Allowed;
        }
        let Some(hash) = self.users.get(&credentials.user) else {
            let _ = bcrypt::verify(&credentials.password, &self.decoy);
            return AuthOutcome::Denied;
        };
        match bcrypt::verify(&credentials.password, hash.as_str()) {
            Ok(true) => {
                let digest = self.digest(&credentials.user, hash, &credentials.password);
                self.verified
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(credentials.user.clone(), digest);
                AuthOutcome::Allowed
            }
            _ => AuthOutcome::Denied,
        }
    }
}

fn getrandom_fill(buf: &mut [u8]) -> Result<(), ring::error::Unspecified> {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new().fill(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator(user: &str, password: &str) -> Authenticator {
        let hash = bcrypt::hash(password, 4).unwrap();
        let mut users = BTreeMap::new();
        users.insert(user.to_string(), BcryptHash::parse(&hash).unwrap());
        Authenticator::new(users)
    }

    fn creds(user: &str, password: &str) -> Credentials {
        Credentials {
            user: user.into(),
            password: password.into(),
        }
    }

    #[test]
    fn right_password_passes_and_is_cached_wrong_ones_never() {
        let auth = authenticator("prometheus", "s3cret:with:colons");
        let good = creds("prometheus", "s3cret:with:colons");
        assert_eq!(auth.cached(&good), None);
        assert_eq!(auth.verify(Some(&good)), AuthOutcome::Allowed);
        assert_eq!(auth.cached(&good), Some(AuthOutcome::Allowed));
        for bad in [
            creds("prometheus", "s3cret"),
            creds("prometheus", ""),
            creds("root", "s3cret:with:colons"),
        ] {
            assert_eq!(auth.verify(Some(&bad)), AuthOutcome::Denied, "{bad:?}");
            assert_eq!(auth.cached(&bad), None, "{bad:?}");
        }
        assert_eq!(auth.verify(None), AuthOutcome::Denied);
    }

    #[test]
    fn basic_header_parsing() {
        // "prometheus:pa:ss" in base64
        let h = b"Basic cHJvbWV0aGV1czpwYTpzcw==";
        assert_eq!(parse_basic(h), Some(creds("prometheus", "pa:ss")));
        assert_eq!(
            parse_basic(b"basic   cHJvbWV0aGV1czpwYTpzcw== "),
            Some(creds("prometheus", "pa:ss"))
        );
        for bad in [
            &b"Bearer abc"[..],
            b"Basic !!!",
            b"Basic",
            b"Basic bm9jb2xvbg==",
            b"\xff\xfe",
        ] {
            assert_eq!(parse_basic(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_2y_hash_as_htpasswd_writes_it_verifies() {
        let parts = bcrypt::hash_with_salt("secret", 4, [7u8; 16]).unwrap();
        let hash = parts.format_for_version(bcrypt::Version::TwoY);
        assert!(hash.starts_with("$2y$04$"), "{hash}");
        let mut users = BTreeMap::new();
        users.insert("prometheus".to_string(), BcryptHash::parse(&hash).unwrap());
        let auth = Authenticator::new(users);
        assert_eq!(
            auth.verify(Some(&creds("prometheus", "secret"))),
            AuthOutcome::Allowed
        );
        assert_eq!(
            auth.verify(Some(&creds("prometheus", "Secret"))),
            AuthOutcome::Denied
        );
    }
}
