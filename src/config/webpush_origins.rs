//! `[apps.<name>.webpush] allowed_origins`: the push-service origins a job's
//! subscription may name. An SSRF guard: a subscription endpoint comes from
//! the job, so without it any producer could make the gateway POST to any
//! host it can reach (metadata services, admin ports, the intranet).
//!
//! Entries are `host[:port]` (port 443 when absent; `https://` may prefix
//! it): an exact host, `*.domain` for any subdomain of `domain` (not
//! `domain` itself), `*` for any host name, and `@default` for
//! [`DEFAULT_ALLOWED_ORIGINS`]. IP literals, `localhost` and names that
//! only a resolver's number parsing would take (`2130706433`, `127.1`) are
//! matched by exact entries only, never by a wildcard or `*`.

use std::fmt;

/// The push services of the major browsers: the default allow-list.
pub const DEFAULT_ALLOWED_ORIGINS: &[&str] = &[
    // Chrome, Opera, Samsung Internet and other Chromium browsers (FCM).
    "fcm.googleapis.com",
    // Firefox (Mozilla autopush).
    "updates.push.services.mozilla.com",
    "push.services.mozilla.com",
    // Safari (Apple Push Notification service for the web).
    "web.push.apple.com",
    // Edge on Windows (WNS), e.g. wns2-par02p.notify.windows.com.
    "*.notify.windows.com",
];

/// The `allowed_origins` entry that stands for [`DEFAULT_ALLOWED_ORIGINS`].
pub const DEFAULTS_ENTRY: &str = "@default";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Exact(String),
    /// Strict subdomains of the name.
    Subdomains(String),
    /// Any host name (not an IP literal or localhost).
    AnyName,
}

/// One allowed origin pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    host: Host,
    port: u16,
}

impl OriginPattern {
    /// Parses one entry (not `@default`).
    pub fn parse(entry: &str) -> Result<OriginPattern, String> {
        let bad = |why: &str| format!("{entry:?}: {why}");
        let e = entry.trim();
        let e = e.strip_prefix("https://").unwrap_or(e);
        let e = e.strip_suffix('/').unwrap_or(e);
        if e.contains("://") {
            return Err(bad("push services are https only; write host[:port]"));
        }
        if e.is_empty() || e.contains(['/', '?', '#', '@']) || e.contains(char::is_whitespace) {
            return Err(bad(
                "write host[:port], *.domain[:port] or *, without a path",
            ));
        }
        let (host, port) = split_port(e).map_err(|why| bad(&why))?;
        let host = normalize(host);
        let host = if host == "*" {
            Host::AnyName
        } else if let Some(domain) = host.strip_prefix("*.") {
            if domain.contains('*') || !domain.contains('.') || is_special(domain) {
                return Err(bad(
                    "a wildcard needs a domain of at least two labels, e.g. *.notify.windows.com",
                ));
            }
            Host::Subdomains(domain.to_owned())
        } else if host.contains('*') {
            return Err(bad("`*` only as a whole first label (*.domain) or alone"));
        } else if host.is_empty() {
            return Err(bad("empty host"));
        } else {
            Host::Exact(host)
        };
        Ok(OriginPattern { host, port })
    }

    fn matches(&self, host: &str, port: u16) -> bool {
        if port != self.port {
            return false;
        }
        match &self.host {
            Host::Exact(h) => h == host,
            Host::Subdomains(d) => {
                !is_special(host)
                    && host.len() > d.len() + 1
                    && host.ends_with(d.as_str())
                    && host.as_bytes()[host.len() - d.len() - 1] == b'.'
            }
            Host::AnyName => !is_special(host),
        }
    }
}

impl fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Exact(h) if h.contains(':') => write!(f, "[{h}]")?,
            Host::Exact(h) => f.write_str(h)?,
            Host::Subdomains(d) => write!(f, "*.{d}")?,
            Host::AnyName => f.write_str("*")?,
        }
        if self.port != 443 {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// `host[:port]`, `[v6][:port]`; port 443 when absent.
fn split_port(e: &str) -> Result<(&str, u16), String> {
    let port = |p: &str| p.parse::<u16>().map_err(|_| format!("bad port {p:?}"));
    if let Some(v6) = e.strip_prefix('[') {
        let (h, tail) = v6.split_once(']').ok_or("unclosed IPv6 literal")?;
        return match tail {
            "" => Ok((h, 443)),
            t => Ok((
                h,
                port(t.strip_prefix(':').ok_or("junk after IPv6 literal")?)?,
            )),
        };
    }
    match e.rsplit_once(':') {
        Some((h, _)) if h.contains(':') => Err("write an IPv6 literal in brackets".to_owned()),
        Some((h, p)) => Ok((h, port(p)?)),
        None => Ok((e, 443)),
    }
}

/// Lower case, without a trailing dot (`fcm.googleapis.com.`).
fn normalize(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// IP literals, localhost, and names a resolver could read as a number:
/// anything whose last label does not start with a letter.
fn is_special(host: &str) -> bool {
    let last = host.rsplit('.').next().unwrap_or(host);
    host.contains(':')
        || !last.starts_with(|c: char| c.is_ascii_alphabetic())
        || host == "localhost"
        || host.ends_with(".localhost")
}

/// The validated `allowed_origins` of one app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedOrigins {
    patterns: Vec<OriginPattern>,
}

impl Default for AllowedOrigins {
    /// [`DEFAULT_ALLOWED_ORIGINS`].
    fn default() -> Self {
        let patterns = DEFAULT_ALLOWED_ORIGINS
            .iter()
            .filter_map(|e| OriginPattern::parse(e).ok())
            .collect();
        AllowedOrigins { patterns }
    }
}

impl AllowedOrigins {
    /// Parses the entries (`@default` expands to the default list); every
    /// bad entry is reported.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<AllowedOrigins, Vec<String>> {
        let mut patterns = Vec::new();
        let mut problems = Vec::new();
        for entry in entries {
            match entry.as_ref().trim() {
                DEFAULTS_ENTRY => patterns.extend(AllowedOrigins::default().patterns),
                e => match OriginPattern::parse(e) {
                    Ok(p) => patterns.push(p),
                    Err(why) => problems.push(why),
                },
            }
        }
        if problems.is_empty() && patterns.is_empty() {
            problems.push(format!(
                "empty: no subscription could be sent to; remove the key for the defaults ({DEFAULTS_ENTRY})"
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        patterns.dedup();
        Ok(AllowedOrigins { patterns })
    }

    /// Whether a subscription endpoint at `host:port` may be sent to;
    /// `Err` says why not, for the recipient's result.
    pub fn check(&self, host: &str, port: u16) -> Result<(), String> {
        let h = normalize(host);
        if self.patterns.iter().any(|p| p.matches(&h, port)) {
            return Ok(());
        }
        let shown = if h.contains(':') {
            format!("[{h}]:{port}")
        } else {
            format!("{h}:{port}")
        };
        Err(if is_special(&h) {
            format!("push service {shown} is an IP address or localhost and not listed in this app's webpush allowed_origins; nothing sent")
        } else {
            format!(
                "push service {shown} is not in this app's webpush allowed_origins; nothing sent"
            )
        })
    }

    /// The patterns as written back (for `check-config`).
    pub fn entries(&self) -> Vec<String> {
        self.patterns.iter().map(ToString::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(entries: &[&str]) -> AllowedOrigins {
        AllowedOrigins::parse(entries).unwrap()
    }

    #[test]
    fn defaults_allow_the_browser_push_services_only() {
        let a = AllowedOrigins::default();
        for host in [
            "fcm.googleapis.com",
            "FCM.googleapis.com.",
            "updates.push.services.mozilla.com",
            "push.services.mozilla.com",
            "web.push.apple.com",
            "wns2-par02p.notify.windows.com",
            "db5.notify.windows.com",
        ] {
            assert!(a.check(host, 443).is_ok(), "{host}");
        }
        for (host, port) in [
            ("fcm.googleapis.com", 8443),
            ("notify.windows.com", 443),
            ("evilnotify.windows.com", 443),
            ("notify.windows.com.evil.example", 443),
            ("googleapis.com", 443),
            ("169.254.169.254", 443),
            ("127.0.0.1", 443),
            ("localhost", 443),
        ] {
            assert!(a.check(host, port).is_err(), "{host}:{port}");
        }
        assert_eq!(a, allowed(&["@default"]));
    }

    #[test]
    fn ip_literals_and_localhost_need_an_exact_entry() {
        let a = allowed(&["*", "*.example.com", "127.0.0.1:4444", "[::1]:4444"]);
        assert!(a.check("push.example.net", 443).is_ok());
        assert!(a.check("a.b.example.com", 443).is_ok());
        assert!(a.check("127.0.0.1", 4444).is_ok());
        assert!(a.check("::1", 4444).is_ok());
        for host in [
            "127.0.0.1",
            "10.0.0.1",
            "::1",
            "2130706433",
            "127.1",
            "0x7f.1",
            "localhost",
            "db.localhost",
        ] {
            let err = a.check(host, 443).unwrap_err();
            assert!(err.contains("IP address or localhost"), "{host}: {err}");
        }
        assert!(a.check("127.0.0.1", 4445).is_err());
        let err = a.check("push.example.net", 8443).unwrap_err();
        assert_eq!(
            err,
            "push service push.example.net:8443 is not in this app's webpush allowed_origins; nothing sent"
        );
    }

    #[test]
    fn entries_are_normalized_and_shown_back() {
        let a = allowed(&[
            "https://Push.Example.NET/",
            "*.example.com:8443",
            "[::1]:4444",
            "@default",
            "localhost:443",
        ]);
        let shown = a.entries();
        assert_eq!(
            shown[..3],
            ["push.example.net", "*.example.com:8443", "[::1]:4444"]
        );
        assert!(shown.contains(&"*.notify.windows.com".to_owned()));
        assert_eq!(shown.last().map(String::as_str), Some("localhost"));
        assert!(a.check("localhost", 443).is_ok());
    }

    #[test]
    fn bad_entries_are_all_reported() {
        let err = AllowedOrigins::parse(&[
            "http://push.example.net",
            "push.example.net/path",
            "*.com",
            "a.*.example.com",
            "push.example.net:99999",
            "::1",
            "",
            "fine.example.com",
        ])
        .unwrap_err();
        assert_eq!(err.len(), 7, "{err:?}");
        assert!(err[0].contains("https only"), "{}", err[0]);
        assert!(err[2].contains("two labels"), "{}", err[2]);
        assert!(err[4].contains("bad port"), "{}", err[4]);
        assert!(err[5].contains("brackets"), "{}", err[5]);
        let empty: [&str; 0] = [];
        let err = AllowedOrigins::parse(&empty).unwrap_err();
        assert!(err[0].contains("empty"), "{err:?}");
    }
}
