//! Who may call: bearer tokens as RFC 9110 §11 and RFC 6750 §2.1 have them, compared in
//! constant time, and client-certificate identities (exact match against the verified
//! certificate's URI and DNS SANs, see [`crate::listener::Peer`]). Shared by every front that
//! takes credentials (detail on gRPC and HTTP, admin, push).

use std::sync::Arc;

/// Who is on the other end of a connection: given to the requests that decide by caller
/// (admin, detail; every request of a connection with a client-certificate identity).
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// The peer's address (TCP; `None` on a Unix socket).
    pub remote: Option<std::net::SocketAddr>,
    /// The verified client certificate's identities: URI SANs as they are, DNS SANs as
    /// `dns:NAME`. Empty without a client certificate.
    pub identities: Arc<[String]>,
}

impl Peer {
    /// The first of `allowed` this peer has, if any (exact match).
    pub fn identity_in<'a>(&'a self, allowed: &[String]) -> Option<&'a str> {
        self.identities
            .iter()
            .find(|id| allowed.iter().any(|a| a == *id))
            .map(String::as_str)
    }
}

/// The credentials a service accepts: a bearer token, client-certificate identities, both
/// (either one admits), or neither (open to anyone).
#[derive(Clone, Default)]
pub(crate) struct Access {
    token: Option<Arc<str>>,
    identities: Arc<[String]>,
    /// Admits no one (a service that must never be open).
    nobody: bool,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field(
                "token",
                &self.token.as_ref().map(|_| crate::redact::REDACTED),
            )
            .field("identities", &self.identities)
            .finish()
    }
}

/// Why a call was admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Granted {
    /// No credentials are required.
    Open,
    /// The bearer token.
    Token,
    /// This allowed identity of the client certificate.
    Identity(String),
}

impl Access {
    pub(crate) fn new(token: Option<String>, identities: Vec<String>) -> Access {
        Access {
            token: token.map(Arc::from),
            identities: identities.into(),
            nobody: false,
        }
    }

    /// Admits no one.
    pub(crate) fn nobody() -> Access {
        Access {
            nobody: true,
            ..Access::default()
        }
    }

    /// Whether anyone may call.
    pub(crate) fn is_open(&self) -> bool {
        !self.nobody && self.token.is_none() && self.identities.is_empty()
    }

    /// Admits a caller sending `authorization` (the field value) over a connection from
    /// `peer`, or not (`None`).
    pub(crate) fn check(
        &self,
        authorization: Option<&str>,
        peer: Option<&Peer>,
    ) -> Option<Granted> {
        if self.is_open() {
            return Some(Granted::Open);
        }
        if let Some(token) = &self.token
            && let Some(given) = authorization.and_then(bearer_token)
            && constant_time_eq(given.as_bytes(), token.as_bytes())
        {
            return Some(Granted::Token);
        }
        peer.and_then(|p| p.identity_in(&self.identities))
            .map(|id| Granted::Identity(id.to_owned()))
    }
}

/// The token of an `Authorization` field value using the `Bearer` scheme, or `None`.
///
/// `credentials = auth-scheme [ 1*SP token68 ]`: the scheme is case-insensitive (RFC 9110
/// §11.1) and separated from the token by one or more spaces; the whitespace around a field
/// value is not part of it (§5.5).
pub(crate) fn bearer_token(value: &str) -> Option<&str> {
    let value = value.trim_matches([' ', '\t']);
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_start_matches(' ');
    (!token.is_empty() && !token.contains([' ', '\t'])).then_some(token)
}

/// Whether `given` is `expected`, without an early exit, so response timing does not reveal
/// how much of a guessed token was right.
pub(crate) fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_takes_one_or_more_spaces() {
        for value in [
            "Bearer abc",
            "bearer abc",
            "BEARER abc",
            "Bearer   abc",
            " Bearer abc\t",
        ] {
            assert_eq!(bearer_token(value), Some("abc"), "{value:?}");
        }
        for value in [
            "Bearer",
            "Bearer ",
            "Basic abc",
            "Bearerabc",
            "Bearer\tabc",
            "Bearer a b",
            "",
        ] {
            assert_eq!(bearer_token(value), None, "{value:?}");
        }
    }

    #[test]
    fn a_token_or_an_allowed_identity_admits() {
        let peer = |ids: &[&str]| Peer {
            remote: None,
            identities: ids
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<Vec<_>>()
                .into(),
        };
        let admin = "spiffe://cluster.local/ns/ops/sa/admin".to_owned();
        let access = Access::new(Some("sixteen-chars-tok".into()), vec![admin.clone()]);
        assert_eq!(
            access.check(Some("Bearer sixteen-chars-tok"), None),
            Some(Granted::Token)
        );
        assert_eq!(access.check(Some("Bearer wrong"), None), None);
        assert_eq!(
            access.check(None, Some(&peer(&["dns:x.example", &admin]))),
            Some(Granted::Identity(admin.clone()))
        );
        // Exact match only: no prefixes, no case folding.
        assert_eq!(
            access.check(
                None,
                Some(&peer(&["spiffe://cluster.local/ns/ops/sa/admin2"]))
            ),
            None
        );
        assert_eq!(
            access.check(
                None,
                Some(&peer(&["SPIFFE://cluster.local/ns/ops/sa/admin"]))
            ),
            None
        );
        assert_eq!(access.check(None, Some(&peer(&[]))), None);
        let identities_only = Access::new(None, vec!["dns:ops.example.org".into()]);
        assert_eq!(identities_only.check(Some("Bearer anything"), None), None);
        assert_eq!(
            identities_only.check(None, Some(&peer(&["dns:ops.example.org"]))),
            Some(Granted::Identity("dns:ops.example.org".into()))
        );
        assert_eq!(Access::default().check(None, None), Some(Granted::Open));
        assert_eq!(Access::nobody().check(None, Some(&peer(&[""]))), None);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secreT", b"secret"));
        assert!(!constant_time_eq(b"secret-longer", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
    }
}
