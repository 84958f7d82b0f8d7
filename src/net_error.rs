//! Turning network errors into short, safe reasons (the floor: probes, the gRPC client and TLS
//! setup use it).
//!
//! A network library's top-level error may quote the endpoint (credentials and all), so we never
//! print it: we walk its source chain for the I/O or TLS cause, or the innermost library
//! message, none of which quote the URL. Probes that meet I/O errors directly describe them with
//! `describe_io`.

use std::error::Error;
use std::io;

/// A reason for an error from a network library: the TLS or I/O cause if there is one, else the
/// innermost cause's message. The top-level message is never used (it is the one that quotes the
/// URL); with no cause at all the answer is `None` and the caller names the failure class.
///
/// A lookup failure is `dns: …`, as the HTTP and TCP probes' own resolvers say it: hyper-util's
/// connector (the one tonic's channels use) wraps the resolver's I/O error in an error that
/// reads `dns error` (its type is private), so that message is what marks it.
pub(crate) fn describe(err: &(dyn Error + 'static)) -> Option<String> {
    let mut innermost = None;
    let mut dns = false;
    let mut cur = err.source();
    while let Some(e) = cur {
        if let Some(tls) = find_tls(e) {
            return Some(format!("tls: {tls}"));
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            let reason = describe_io(io);
            return Some(if dns {
                format!("dns: {reason}")
            } else {
                reason
            });
        }
        dns |= e.to_string() == "dns error";
        innermost = Some(e);
        cur = e.source();
    }
    innermost.map(|e| e.to_string())
}

/// A reason for an I/O error, by kind where the kind says enough.
pub(crate) fn describe_io(err: &io::Error) -> String {
    if let Some(tls) = err.get_ref().and_then(|e| find_tls(e)) {
        return format!("tls: {tls}");
    }
    use io::ErrorKind::*;
    match err.kind() {
        ConnectionRefused => "connection refused".to_owned(),
        ConnectionReset => "connection reset".to_owned(),
        ConnectionAborted => "connection aborted".to_owned(),
        UnexpectedEof => "connection closed by peer".to_owned(),
        TimedOut => "connect timed out".to_owned(),
        HostUnreachable => "host unreachable".to_owned(),
        NetworkUnreachable => "network unreachable".to_owned(),
        AddrNotAvailable => "address not available".to_owned(),
        // After the handshake, rustls reports a peer's alert as text inside an InvalidData
        // error (e.g. an mTLS server rejecting us: "received fatal alert: CertificateRequired").
        InvalidData if err.to_string().starts_with("received fatal alert") => format!("tls: {err}"),
        _ => match err.get_ref() {
            Some(inner) => inner.to_string(),
            None => err.to_string(),
        },
    }
}

fn find_tls<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = err.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    err.downcast_ref::<io::Error>()
        .and_then(|io| io.get_ref())
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}
