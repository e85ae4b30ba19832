//! Who may call what. Ingest needs the bearer token (`--auth-token-file`) when one is set. The
//! scrape endpoints and the landing page need, unless `--public-metrics`, the token or a user of
//! the web configuration's `basic_auth_users` (bcrypt hashes), whichever are configured.
//!
//! A bcrypt check costs tens of milliseconds by design, so it runs off the server's threads, and
//! a user's password once verified is remembered (as a SHA-256 of the user, the hash and the
//! password, never the password) until the users change: Prometheus scraping every 15 s pays
//! for bcrypt once. An unknown user is checked against a dummy hash, so that the answer's timing
//! does not tell which users exist.

use crate::config::Token;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use arc_swap::ArcSwap;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// `POST /v1/events`.
    Ingest,
    /// The expositions and the landing page.
    Scrape,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Denied {
    pub(crate) message: &'static str,
    /// The `WWW-Authenticate` challenges to answer with.
    pub(crate) challenges: Vec<HeaderValue>,
}

/// Remembered verifications at most; past that the memory starts over.
const MAX_REMEMBERED: usize = 1024;

/// A bcrypt hash of a password nobody has, checked for unknown users (cost 10, as htpasswd).
const DUMMY_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DSmV5XZTf7jeQsrdoL2.2";

/// The credentials the bridge takes.
#[derive(Debug)]
pub(crate) struct Auth {
    token: Option<Token>,
    public_metrics: bool,
    users: ArcSwap<BTreeMap<String, String>>,
    /// SHA-256 of (user, hash, password) of the verifications that succeeded.
    verified: Mutex<HashSet<[u8; 32]>>,
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in parts {
        // Length-prefixed, so that no two splits of the same bytes collide.
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The credentials of an `Authorization` header.
enum Offered<'a> {
    None,
    Bearer(&'a [u8]),
    Basic(String, Vec<u8>),
    Other,
}

fn offered(headers: &HeaderMap) -> Offered<'_> {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
    else {
        return Offered::None;
    };
    let Some((scheme, rest)) = value
        .iter()
        .position(|&b| b == b' ')
        .map(|at| (&value[..at], value[at + 1..].trim_ascii()))
    else {
        return Offered::Other;
    };
    if scheme.eq_ignore_ascii_case(b"bearer") {
        return Offered::Bearer(rest);
    }
    if scheme.eq_ignore_ascii_case(b"basic") {
        use base64::Engine;
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) else {
            return Offered::Other;
        };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else {
            return Offered::Other;
        };
        let user = String::from_utf8_lossy(&decoded[..colon]).into_owned();
        return Offered::Basic(user, decoded[colon + 1..].to_vec());
    }
    Offered::Other
}

impl Auth {
    pub(crate) fn new(
        token: Option<Token>,
        public_metrics: bool,
        users: BTreeMap<String, String>,
    ) -> Self {
        Self {
            token,
            public_metrics,
            users: ArcSwap::from_pointee(users),
            verified: Mutex::default(),
        }
    }

    /// Puts new users in force (the web configuration changed); what was verified is forgotten.
    pub(crate) fn replace_users(&self, users: BTreeMap<String, String>) {
        if **self.users.load() != users {
            self.users.store(Arc::new(users));
            self.remembered().clear();
        }
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the request carries the token (with one configured).
    pub(crate) fn holds_token(&self, headers: &HeaderMap) -> bool {
        match (&self.token, offered(headers)) {
            (Some(token), Offered::Bearer(t)) => token.matches(t),
            _ => false,
        }
    }

    fn challenges(&self, scope: Scope, users: bool) -> Vec<HeaderValue> {
        let mut challenges = Vec::new();
        if self.token.is_some() {
            challenges.push(HeaderValue::from_static("Bearer realm=\"reflexio-bridge\""));
        }
        if scope == Scope::Scrape && users {
            challenges.push(HeaderValue::from_static(
                "Basic realm=\"reflexio-bridge\", charset=\"UTF-8\"",
            ));
        }
        challenges
    }

    /// `Ok` if a request with `headers` may do what `scope` says. Blocks for a bcrypt check the
    /// first time a user's password is seen: call it off the server's threads
    /// ([`Auth::needs_bcrypt`] tells whether it may).
    pub(crate) fn check(&self, headers: &HeaderMap, scope: Scope) -> Result<(), Denied> {
        let users = self.users.load();
        let basic = Self::takes_basic(&users, scope);
        if (scope == Scope::Scrape && self.public_metrics) || (self.token.is_none() && !basic) {
            return Ok(());
        }
        let deny = |message| Denied {
            message,
            challenges: self.challenges(scope, basic),
        };
        match offered(headers) {
            Offered::Bearer(t) => match &self.token {
                Some(token) if token.matches(t) => Ok(()),
                Some(_) => Err(deny("the bearer token is not the one configured")),
                None => Err(deny("no bearer token is configured: use basic auth")),
            },
            Offered::Basic(user, password) if basic => {
                if self.basic_ok(&users, &user, &password) {
                    Ok(())
                } else {
                    Err(deny("the user name or password is wrong"))
                }
            }
            Offered::None if basic && self.token.is_some() => Err(deny(
                "credentials are required: `Authorization: Bearer <token>` or basic auth",
            )),
            Offered::None if basic => Err(deny("basic auth credentials are required")),
            _ if basic => Err(deny(
                "credentials are required: `Authorization: Bearer <token>` or basic auth",
            )),
            _ => Err(deny(
                "an `Authorization: Bearer <token>` header is required",
            )),
        }
    }

    /// Whether basic auth is checked for `scope`: scrapes only, when users are configured.
    fn takes_basic(users: &BTreeMap<String, String>, scope: Scope) -> bool {
        scope == Scope::Scrape && !users.is_empty()
    }

    /// Whether checking `headers` for `scope` may run bcrypt: a basic-auth password not verified
    /// yet, where [`Auth::check`] would verify it (never for ingest, nor for public scrapes).
    pub(crate) fn needs_bcrypt(&self, headers: &HeaderMap, scope: Scope) -> bool {
        let Offered::Basic(user, password) = offered(headers) else {
            return false;
        };
        let users = self.users.load();
        if !Self::takes_basic(&users, scope) || self.public_metrics {
            return false;
        }
        let hash = users.get(&user).map_or(DUMMY_HASH, String::as_str);
        !self
            .remembered()
            .contains(&sha256(&[user.as_bytes(), hash.as_bytes(), &password]))
    }

    fn basic_ok(&self, users: &BTreeMap<String, String>, user: &str, password: &[u8]) -> bool {
        let (hash, known) = match users.get(user) {
            Some(hash) => (hash.as_str(), true),
            None => (DUMMY_HASH, false),
        };
        let key = sha256(&[user.as_bytes(), hash.as_bytes(), password]);
        if known && self.remembered().contains(&key) {
            return true;
        }
        let ok = bcrypt::verify(password, hash).unwrap_or(false) && known;
        if ok {
            let mut remembered = self.remembered();
            if remembered.len() >= MAX_REMEMBERED {
                remembered.clear();
            }
            remembered.insert(key);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderName;

    fn headers(auth: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(
            HeaderName::from_static("authorization"),
            HeaderValue::from_str(auth).expect("value"),
        );
        map
    }

    fn basic(user: &str, password: &str) -> HeaderMap {
        use base64::Engine;
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        headers(&format!("Basic {encoded}"))
    }

    fn users() -> BTreeMap<String, String> {
        let hash = bcrypt::hash("s3cret", 4).expect("hash");
        BTreeMap::from([("prometheus".to_owned(), hash)])
    }

    #[test]
    fn scrapes_take_the_token_or_a_user_and_ingest_the_token_only() {
        let auth = Auth::new(Some(Token::new(b"tok")), false, users());
        let ok = |h: &HeaderMap, scope| auth.check(h, scope).is_ok();
        assert!(ok(&headers("Bearer tok"), Scope::Scrape));
        assert!(ok(&headers("bearer   tok"), Scope::Ingest));
        assert!(ok(&basic("prometheus", "s3cret"), Scope::Scrape));
        assert!(!ok(&basic("prometheus", "s3cret"), Scope::Ingest));
        assert!(!ok(&basic("prometheus", "wrong"), Scope::Scrape));
        assert!(!ok(&basic("nobody", "s3cret"), Scope::Scrape));
        assert!(!ok(&headers("Bearer other"), Scope::Scrape));
        assert!(!ok(&HeaderMap::new(), Scope::Scrape));
        assert!(!ok(&headers("Digest x"), Scope::Scrape));
        let denied = auth
            .check(&HeaderMap::new(), Scope::Scrape)
            .expect_err("denied");
        assert_eq!(denied.challenges.len(), 2, "Bearer and Basic");
        let denied = auth
            .check(&HeaderMap::new(), Scope::Ingest)
            .expect_err("denied");
        assert_eq!(denied.challenges.len(), 1, "Bearer only");

        let open = Auth::new(None, false, BTreeMap::new());
        assert!(open.check(&HeaderMap::new(), Scope::Scrape).is_ok());
        assert!(open.check(&HeaderMap::new(), Scope::Ingest).is_ok());
        let users_only = Auth::new(None, false, users());
        assert!(users_only.check(&HeaderMap::new(), Scope::Ingest).is_ok());
        assert!(users_only.check(&HeaderMap::new(), Scope::Scrape).is_err());
        let public = Auth::new(Some(Token::new(b"tok")), true, users());
        assert!(public.check(&HeaderMap::new(), Scope::Scrape).is_ok());
        assert!(public.check(&HeaderMap::new(), Scope::Ingest).is_err());
    }

    #[test]
    fn the_dummy_hash_costs_what_a_real_one_does() {
        let parts: bcrypt::HashParts = DUMMY_HASH.parse().expect("a bcrypt hash");
        assert_eq!(parts.get_cost(), 10);
        assert!(!bcrypt::verify("anything", DUMMY_HASH).expect("verified"));
    }

    #[test]
    fn a_verified_password_is_remembered_until_the_users_change() {
        let auth = Auth::new(None, false, users());
        let good = basic("prometheus", "s3cret");
        assert!(auth.needs_bcrypt(&good, Scope::Scrape));
        assert!(auth.check(&good, Scope::Scrape).is_ok());
        assert!(!auth.needs_bcrypt(&good, Scope::Scrape), "remembered");
        assert!(auth.needs_bcrypt(&basic("prometheus", "wrong"), Scope::Scrape));
        assert!(
            auth.check(&basic("prometheus", "wrong"), Scope::Scrape)
                .is_err()
        );
        assert!(
            auth.needs_bcrypt(&basic("prometheus", "wrong"), Scope::Scrape),
            "failures are not"
        );
        auth.replace_users(BTreeMap::from([(
            "prometheus".to_owned(),
            bcrypt::hash("new", 4).expect("hash"),
        )]));
        assert!(
            auth.check(&good, Scope::Scrape).is_err(),
            "the old password"
        );
        assert!(
            auth.check(&basic("prometheus", "new"), Scope::Scrape)
                .is_ok()
        );
        assert!(!auth.needs_bcrypt(&headers("Bearer x"), Scope::Scrape));
        // Only where check() verifies a password: ingest takes the token only, and public
        // scrapes take anyone.
        let fresh = basic("prometheus", "unseen");
        assert!(auth.needs_bcrypt(&fresh, Scope::Scrape));
        assert!(!auth.needs_bcrypt(&fresh, Scope::Ingest));
        let public = Auth::new(Some(Token::new(b"tok")), true, users());
        assert!(!public.needs_bcrypt(&fresh, Scope::Scrape));
        assert!(!Auth::new(None, false, BTreeMap::new()).needs_bcrypt(&fresh, Scope::Scrape));
    }
}
