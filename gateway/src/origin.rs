//! The browser origin allow-list of WebSocket upgrades (`VIDEOCHAT_ALLOWED_ORIGINS`).
//!
//! Browsers let any web page open a WebSocket to any host, and say which page did it in the
//! `Origin` header. The allow-list is how the gateway tells its own web app from a page somebody
//! else wrote. Tokens are bearer tokens, not cookies, so a foreign page cannot ride on a user's
//! session by itself; the list is defence in depth (a page that got hold of a token, a foreign
//! site using the service from its visitors' browsers). Clients that are not browsers send no
//! `Origin` and are never refused by it.

use std::collections::HashSet;

/// Which `Origin` values may upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPolicy {
    /// Any origin: the setting is unset (development) or `*`.
    Any,
    /// Only these origins, normalised (lower case, no default port, no trailing slash).
    Only(HashSet<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{entry:?} is not an origin (expected scheme://host[:port], `null` or `*`)")]
pub struct OriginError {
    pub entry: String,
}

impl OriginPolicy {
    /// Reads the comma-separated entries of `VIDEOCHAT_ALLOWED_ORIGINS`. No entries: any origin.
    pub fn parse(entries: &[String]) -> Result<Self, OriginError> {
        let mut allowed = HashSet::new();
        let mut any = false;
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            if entry == "*" {
                any = true;
                continue;
            }
            let normalised = normalise(entry).ok_or_else(|| OriginError {
                entry: entry.to_owned(),
            })?;
            allowed.insert(normalised);
        }
        if any || allowed.is_empty() {
            Ok(Self::Any)
        } else {
            Ok(Self::Only(allowed))
        }
    }

    /// Whether a request with this `Origin` header (if any) may upgrade. A request without one
    /// is not from a browser page and is allowed; an unreadable one is refused.
    pub fn allows(&self, origin: Option<&http::HeaderValue>) -> bool {
        let Self::Only(allowed) = self else {
            return true;
        };
        let Some(origin) = origin else {
            return true;
        };
        origin
            .to_str()
            .ok()
            .and_then(normalise)
            .is_some_and(|origin| allowed.contains(&origin))
    }
}

/// `scheme://host[:port]` in lower case without a default port; `null` (sandboxed pages, files)
/// as itself. `None` for anything else (a path, no scheme, an empty host).
fn normalise(origin: &str) -> Option<String> {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    if origin == "null" {
        return Some(origin);
    }
    let (scheme, authority) = origin.split_once("://")?;
    let valid_scheme = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !valid_scheme
        || authority.is_empty()
        || authority.contains(['/', '?', '#', '@', ' '])
        || authority.starts_with(':')
    {
        return None;
    }
    let authority = match (scheme, authority.rsplit_once(':')) {
        ("https", Some((host, "443"))) | ("http", Some((host, "80"))) => host,
        _ => authority,
    };
    Some(format!("{scheme}://{authority}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> OriginPolicy {
        OriginPolicy::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn allows(policy: &OriginPolicy, origin: Option<&str>) -> bool {
        let value = origin.map(|o| http::HeaderValue::from_str(o).unwrap());
        policy.allows(value.as_ref())
    }

    #[test]
    fn unset_or_star_allows_any_origin() {
        assert_eq!(policy(&[]), OriginPolicy::Any);
        assert_eq!(policy(&["", " "]), OriginPolicy::Any);
        assert_eq!(policy(&["https://a.test", "*"]), OriginPolicy::Any);
        assert!(allows(&policy(&[]), Some("https://evil.test")));
    }

    #[test]
    fn a_list_allows_its_origins_and_requests_without_origin_only() {
        let list = policy(&["https://App.example.test/", " http://localhost:3000"]);
        assert!(allows(&list, Some("https://app.example.test")));
        assert!(allows(&list, Some("https://app.example.test:443")));
        assert!(allows(&list, Some("HTTPS://APP.EXAMPLE.TEST")));
        assert!(allows(&list, Some("http://localhost:3000")));
        assert!(allows(&list, None), "non-browser clients send no Origin");
        assert!(!allows(&list, Some("https://evil.example.test")));
        assert!(!allows(&list, Some("http://app.example.test")));
        assert!(!allows(&list, Some("https://app.example.test.evil.test")));
        assert!(!allows(&list, Some("http://localhost:3001")));
        assert!(!allows(&list, Some("null")));
        assert!(!allows(&list, Some("")));
        let unreadable = http::HeaderValue::from_bytes(b"https://app.example.test\xff").unwrap();
        assert!(!list.allows(Some(&unreadable)));
    }

    #[test]
    fn entries_that_are_not_origins_are_refused_naming_them() {
        for bad in [
            "app.example.test",
            "https://app.example.test/path",
            "https://",
            "https://user@host",
        ] {
            let error = OriginPolicy::parse(&[bad.to_owned()]).unwrap_err();
            assert!(error.to_string().contains(bad), "{error}");
        }
        assert!(allows(&policy(&["null"]), Some("null")));
    }
}
