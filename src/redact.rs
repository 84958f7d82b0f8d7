//! Keeping secrets out of everything we print: the redacted display form of URLs, and
//! [`Secrets`], the per-dependency list of secret values scrubbed from any text as a last line of
//! defense.
//!
//! The first line of defense is that probes never put URLs, header values or bodies into reasons.
//! Scrubbing catches what slips through anyway (say, an error message from a library that quotes
//! its input).

use std::borrow::Cow;
use std::sync::Arc;

use url::Url;

/// What replaces a secret wherever one would be printed.
pub const REDACTED: &str = "[redacted]";

/// Secret values shorter than this are not scrubbed from free text: they would match ordinary
/// words and numbers (`1`, `on`) and garble reasons. They are still never printed as part of a
/// URL or header, which is where they live.
const MIN_SCRUB_LEN: usize = 4;

/// The secret values of one dependency: URL credentials, query values, secret header and
/// metadata values, and anything expanded from `${ENV}`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets(Arc<[Box<str>]>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} values)", self.0.len())
    }
}

impl Secrets {
    /// A set of secret values; empty and duplicate values are dropped.
    pub fn new<I, S>(values: I) -> Secrets
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut v: Vec<Box<str>> = values
            .into_iter()
            .filter(|s| s.as_ref().len() >= MIN_SCRUB_LEN)
            .map(|s| s.as_ref().into())
            .collect();
        // Longest first, so a secret that contains another is replaced whole.
        v.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        v.dedup();
        Secrets(v.into())
    }

    /// Whether there is nothing to scrub.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `text` with every secret value replaced by [`REDACTED`].
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for secret in self.0.iter() {
            if out.contains(&**secret) {
                out = Cow::Owned(out.replace(&**secret, REDACTED));
            }
        }
        out
    }
}

/// The secret parts of a URL, raw and percent-decoded: user name, password and query values.
pub fn url_secrets(url: &Url) -> Vec<String> {
    let mut out = Vec::new();
    for raw in [url.username(), url.password().unwrap_or("")] {
        if !raw.is_empty() {
            out.push(raw.to_owned());
            out.push(percent_decode(raw));
        }
    }
    if let Some(query) = url.query() {
        for pair in query.split('&') {
            // A part without `=` (`?s3cret`) is a value with no name.
            let value = pair.split_once('=').map_or(pair, |(_, value)| value);
            out.push(value.to_owned());
            out.push(percent_decode(value));
        }
    }
    out
}

/// The URL as it may be shown: user info and every query value replaced (a query part
/// without `=` is a value), fragment dropped.
///
/// `https://user:pw@host:8443/health?token=abc&v=1&key` becomes
/// `https://[redacted]@host:8443/health?token=[redacted]&v=[redacted]&[redacted]`.
pub fn redact_url(url: &Url) -> String {
    let mut out = format!("{}://", url.scheme());
    if !url.username().is_empty() || url.password().is_some() {
        out.push_str(REDACTED);
        out.push('@');
    }
    if let Some(host) = url.host_str() {
        out.push_str(host);
    }
    if let Some(port) = url.port() {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(url.path());
    if let Some(query) = url.query() {
        out.push('?');
        out.push_str(&redact_query(query));
    }
    out
}

/// A URL as written in the config, before `${NAME}` expansion, as it may be shown: the
/// variables stay `${NAME}` (names are not secret, their values are, wherever they stand —
/// host, port, path or query), and user info and query values are redacted as
/// [`redact_url`] does. Works on text, because the template need not parse as a URL
/// (`https://${HOST}:${PORT}/`).
pub fn redact_url_template(template: &str) -> String {
    let text = template
        .split_once('#')
        .map_or(template, |(before, _)| before);
    let (text, query) = match text.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (text, None),
    };
    let mut out = match text.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://{REDACTED}@{host}{path}"),
                None => text.to_owned(),
            }
        }
        None => text.to_owned(),
    };
    if let Some(query) = query {
        out.push('?');
        out.push_str(&redact_query(query));
    }
    out
}

fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) => format!("{name}={REDACTED}"),
            None if pair.is_empty() => String::new(),
            None => REDACTED.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_userinfo_and_query_values() {
        let url = Url::parse("https://bob:s3cr%40t@db.internal:8443/health?token=abc&v=1#frag")
            .expect("valid url literal");
        assert_eq!(
            redact_url(&url),
            "https://[redacted]@db.internal:8443/health?token=[redacted]&v=[redacted]"
        );
        let secrets = Secrets::new(url_secrets(&url));
        assert_eq!(secrets.scrub("pw was s3cr@t"), "pw was [redacted]");
        assert_eq!(secrets.scrub("raw s3cr%40t"), "raw [redacted]");
    }

    #[test]
    fn query_parts_without_a_name_are_values() {
        let url = Url::parse("https://h/x?s3cret-part&a=b").expect("valid url literal");
        assert_eq!(redact_url(&url), "https://h/x?[redacted]&a=[redacted]");
        assert!(url_secrets(&url).contains(&"s3cret-part".to_owned()));
    }

    #[test]
    fn templates_keep_variable_names_and_redact_like_urls() {
        assert_eq!(
            redact_url_template("https://u:${PW}@${HOST}:${PORT}/${PATH}?k=${V}&${RAW}#f"),
            "https://[redacted]@${HOST}:${PORT}/${PATH}?k=[redacted]&[redacted]"
        );
        assert_eq!(
            redact_url_template("http://${HOST}:80/health"),
            "http://${HOST}:80/health"
        );
        assert_eq!(redact_url_template("${URL}"), "${URL}");
    }

    #[test]
    fn short_values_are_not_scrubbed_from_text() {
        let secrets = Secrets::new(["1", "longsecret"]);
        assert_eq!(secrets.scrub("HTTP 1 longsecret"), "HTTP 1 [redacted]");
    }
}
