//! The policy for repository URLs a user may submit: which transports are allowed and
//! which hosts a worker may be sent to.
//!
//! Allowed: `https://`, `http://`, `git://`, `ssh://` and the scp-like `[user@]host:path`
//! (which git runs over ssh). Refused: git's `<transport>::<address>` syntax (`ext::` runs
//! a command, `fd::` reads a file descriptor), every other scheme, and — unless local
//! repositories are allowed (tests, standalone) — `file://` URLs, bare paths and hosts
//! that are loopback, private, link-local, unspecified or `localhost`. The host check
//! looks at the text only; a public name that resolves to a private address is the
//! worker's to refuse when it connects.
//!
//! Error messages never repeat the URL's user-info, which may be a credential.
//!
//! [`RepoUrl`] is a URL that passed the policy: the frontend parses a submitted URL into one
//! (refusing it with the reason otherwise), the worker parses the URL it is given once more
//! before it fetches, and the mirror cache takes only a `RepoUrl`. Everything that reads a
//! repository URL — the policy, the credentials taken out for git, the redacted form for logs
//! and answers — is in this module.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

/// Longest URL accepted, in bytes.
pub const MAX_URL_LEN: usize = 2048;

/// Schemes accepted in `scheme://` form (besides `file` when local repositories are allowed).
pub const ALLOWED_SCHEMES: [&str; 4] = ["https", "http", "git", "ssh"];

/// A repository URL that passed the policy (see the module documentation). Its `Debug`
/// form is redacted; the full text (credentials included) only comes out of
/// [`RepoUrl::as_str`].
#[derive(Clone, PartialEq, Eq)]
pub struct RepoUrl(String);

/// Why a repository URL was refused; the text never repeats its credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RepoUrlError(String);

impl RepoUrl {
    /// Parses `url` against the policy; `allow_local` admits `file://` URLs, paths and local
    /// hosts (tests, standalone).
    pub fn parse(url: &str, allow_local: bool) -> Result<Self, RepoUrlError> {
        check_repo_url(url, allow_local).map_err(RepoUrlError)?;
        Ok(Self(url.to_string()))
    }

    /// The URL as submitted, credentials included: for the store and for git only.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL as submitted, credentials included.
    pub fn into_string(self) -> String {
        self.0
    }

    /// The URL with its user-info replaced by `***`, for logs and answers.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }

    /// The user-info (`user:password`) of a `scheme://` URL, if it has one.
    pub fn userinfo(&self) -> Option<&str> {
        userinfo(&self.0)
    }

    /// The address without its user-info and the credentials it carried; see
    /// [`split_credentials`].
    pub fn split_credentials(&self) -> (String, Option<UrlCredentials>) {
        split_credentials(&self.0)
    }
}

impl std::fmt::Debug for RepoUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RepoUrl").field(&self.redacted()).finish()
    }
}

/// Removes `user:password@` from a URL-like string (`scheme://user:pw@host/...`); other
/// text comes back unchanged. Works on any string, so that stored URLs are shown redacted
/// whatever they hold.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}://***@{}", &url[..scheme_end], &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// The user-info of a `scheme://` URL-like string.
fn userinfo(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    authority.rfind('@').map(|at| &authority[..at])
}

/// Checks a repository URL against the policy; the error says why it was refused.
fn check_repo_url(url: &str, allow_local: bool) -> Result<(), String> {
    if url.is_empty() {
        return Err("the repository url is empty".into());
    }
    if url.len() > MAX_URL_LEN {
        return Err(format!(
            "the repository url is longer than {MAX_URL_LEN} bytes"
        ));
    }
    if let Some(transport) = transport_prefix(url) {
        return Err(format!(
            "git transport {transport:?} (`{transport}::`) is not allowed"
        ));
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("the repository url contains whitespace or control characters".into());
    }
    if url.starts_with('-') {
        // Would read as an option to git or ssh.
        return Err("the repository url must not start with '-'".into());
    }
    if url.contains("://") {
        return check_scheme_url(url, allow_local);
    }
    if let Some((host, path)) = split_scp_like(url) {
        return check_scp_like(host, path, allow_local);
    }
    if allow_local {
        Ok(())
    } else {
        Err("local paths are not allowed as repository urls".into())
    }
}

/// A user name and password (or token) taken out of a repository URL; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct UrlCredentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for UrlCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UrlCredentials([redacted])")
    }
}

/// Splits an `http(s)://` or `git://` URL into the address without its user-info (what a
/// clone may store on disk) and the credentials it carried (decoded), to be handed to git
/// per request. Other URLs come back unchanged: an `ssh://` user is a login name, not a
/// secret, and ssh authenticates with keys.
pub fn split_credentials(url: &str) -> (String, Option<UrlCredentials>) {
    let Ok(mut parsed) = Url::parse(url) else {
        return (url.to_string(), None);
    };
    if !matches!(parsed.scheme(), "http" | "https" | "git")
        || (parsed.username().is_empty() && parsed.password().is_none())
    {
        return (url.to_string(), None);
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let credentials = UrlCredentials {
        user: decode(parsed.username()),
        password: decode(parsed.password().unwrap_or("")),
    };
    // Both succeed for these schemes, which always have a host.
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    (parsed.to_string(), Some(credentials))
}

/// `Some(name)` when the URL uses git's `<transport>::<address>` syntax.
fn transport_prefix(url: &str) -> Option<&str> {
    let (name, _) = url.split_once("::")?;
    let is_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '_'));
    is_name.then_some(name)
}

fn check_scheme_url(url: &str, allow_local: bool) -> Result<(), String> {
    let parsed = Url::parse(url).map_err(|e| format!("the repository url is not valid: {e}"))?;
    let scheme = parsed.scheme();
    if scheme == "file" {
        return if allow_local {
            Ok(())
        } else {
            Err("file urls are not allowed".into())
        };
    }
    if !ALLOWED_SCHEMES.contains(&scheme) {
        return Err(format!(
            "scheme {scheme:?} is not allowed; use https, http, git or ssh"
        ));
    }
    if parsed.username().starts_with('-') {
        return Err("the user name in the repository url must not start with '-'".into());
    }
    let host = parsed
        .host()
        .ok_or_else(|| "the repository url has no host".to_string())?;
    let path = parsed.path().trim_start_matches('/');
    if path.is_empty() {
        return Err("the repository url has no path".into());
    }
    match host {
        Host::Domain(domain) => check_domain(domain, allow_local),
        Host::Ipv4(ip) => check_ip(IpAddr::V4(ip), allow_local),
        Host::Ipv6(ip) => check_ip(IpAddr::V6(ip), allow_local),
    }
}

/// Splits `[user@]host:path` when the text is scp-like as git sees it: a colon before any
/// slash (a bracketed IPv6 host may contain colons).
fn split_scp_like(url: &str) -> Option<(&str, &str)> {
    let (user_host, rest) = if let Some(open) = url
        .find("@[")
        .map(|i| i + 1)
        .or_else(|| url.starts_with('[').then_some(0))
    {
        let close = url[open..].find(']')? + open;
        let after = &url[close + 1..];
        let path = after.strip_prefix(':')?;
        (&url[..=close], path)
    } else {
        let colon = url.find(':')?;
        if url[..colon].contains('/') {
            return None;
        }
        (&url[..colon], &url[colon + 1..])
    };
    Some((user_host, rest))
}

fn check_scp_like(user_host: &str, path: &str, allow_local: bool) -> Result<(), String> {
    let (user, host) = match user_host.rsplit_once('@') {
        Some((user, host)) => (Some(user), host),
        None => (None, user_host),
    };
    if user.is_some_and(|u| u.is_empty() || u.starts_with('-')) {
        return Err("the user name in the repository url is not valid".into());
    }
    if host.is_empty() {
        return Err("the repository url has no host".into());
    }
    if path.is_empty() {
        return Err("the repository url has no path".into());
    }
    // `user:password@host:path` splits at the first colon, leaving the credential and the
    // real host in the path where redaction cannot find them.
    if path
        .split('/')
        .next()
        .is_some_and(|first| first.contains('@'))
    {
        return Err(
            "credentials are not allowed in scp-like urls; use https://user:token@host/path".into(),
        );
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let ip: Ipv6Addr = inner
            .parse()
            .map_err(|_| format!("host {host:?} is not a valid IPv6 address"))?;
        return check_ip(IpAddr::V6(ip), allow_local);
    }
    let host_ok = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !host_ok || host.starts_with('-') {
        return Err(format!("host {host:?} is not a valid host name"));
    }
    check_domain(host, allow_local)
}

/// A host given as a name. Names that are numbers in disguise (`127.1`, `0x7f.0.0.1`, `0`)
/// are read the way resolvers read them and checked as addresses.
fn check_domain(domain: &str, allow_local: bool) -> Result<(), String> {
    if domain.contains('%') {
        return Err("percent-encoded host names are not allowed".into());
    }
    if domain.starts_with('-') {
        return Err(format!("host {domain:?} is not a valid host name"));
    }
    let name = domain.trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() {
        return Err("the repository url has no host".into());
    }
    if let Some(ip) = numeric_host(&name) {
        return check_ip(IpAddr::V4(ip), allow_local);
    }
    if !allow_local && (name == "localhost" || name.ends_with(".localhost")) {
        return Err(format!(
            "host {name:?} is local; local repositories are not allowed"
        ));
    }
    Ok(())
}

/// The IPv4 address a numeric host name stands for, parsed like `inet_aton` (and the URL
/// standard) does: decimal, octal or hex parts, one to four of them.
fn numeric_host(name: &str) -> Option<Ipv4Addr> {
    let probe = Url::parse(&format!("http://{name}/")).ok()?;
    match probe.host()? {
        Host::Ipv4(ip) => Some(ip),
        _ => None,
    }
}

fn check_ip(ip: IpAddr, allow_local: bool) -> Result<(), String> {
    if allow_local || is_public(ip) {
        Ok(())
    } else {
        Err(format!(
            "host {ip} is a loopback, private, link-local or unspecified address; local repositories are not allowed"
        ))
    }
}

fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // fc00::/7 unique local
                || (first & 0xfe00) == 0xfc00
                // fe80::/10 link-local, fec0::/10 site-local (deprecated)
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0
                // ::a.b.c.d (deprecated IPv4-compatible), which includes ::1 and ::
                || v6.segments()[..6].iter().all(|s| *s == 0))
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        // 0.0.0.0/8 "this network"
        || a == 0
        // 100.64.0.0/10 shared address space (carrier-grade NAT)
        || (a == 100 && (64..128).contains(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(url: &str) -> bool {
        check_repo_url(url, false).is_ok()
    }

    #[test]
    fn public_https_http_git_and_ssh_urls_are_allowed() {
        for url in [
            "https://github.com/x/y.git",
            "https://user:token@github.com/x/y.git",
            "http://example.com/repo",
            "git://example.com/repo.git",
            "ssh://git@github.com/x/y.git",
            "ssh://git@github.com:2222/x/y.git",
            "https://8.8.8.8/x.git",
            "https://[2001:4860:4860::8888]/x.git",
            "HTTPS://GitHub.com/x/y.git",
        ] {
            assert!(allowed(url), "{url}: {:?}", check_repo_url(url, false));
        }
    }

    #[test]
    fn scp_like_urls_are_allowed() {
        assert!(allowed("git@github.com:x/y.git"));
        assert!(allowed("github.com:x/y.git"));
        assert!(allowed("git@[2001:4860:4860::8888]:x/y.git"));
        assert!(allowed("git@github.com:x/y@v2.git"));
        assert!(!allowed("tok:secret@github.com:x/y.git"));
    }

    #[test]
    fn transports_and_other_schemes_are_refused() {
        for url in [
            "ext::sh -c touch% /tmp/pwned",
            "ext::sh",
            "fd::17",
            "fd::0/x",
            "foo::https://github.com/x/y.git",
            "ftp://example.com/x.git",
            "ftps://example.com/x.git",
            "rsync://example.com/x.git",
            "javascript://example.com/x",
            "git+ssh://example.com/x.git",
            "data://text/plain,hi",
        ] {
            assert!(!allowed(url), "{url}");
        }
        // The transport syntax stays refused even where local repositories are allowed.
        assert!(check_repo_url("ext::sh -c id", true).is_err());
        assert!(check_repo_url("fd::3", true).is_err());
        let err = check_repo_url("ext::sh -c id", false).unwrap_err();
        assert!(err.contains("ext"), "{err}");
    }

    #[test]
    fn file_urls_and_bare_paths_need_allow_local() {
        for url in ["file:///srv/repo.git", "/srv/repo.git", "./repo", "repo"] {
            assert!(!allowed(url), "{url}");
            assert!(check_repo_url(url, true).is_ok(), "{url}");
        }
    }

    #[test]
    fn local_and_private_hosts_need_allow_local() {
        for url in [
            "http://localhost/x.git",
            "http://LOCALHOST./x.git",
            "git://foo.localhost/x.git",
            "https://127.0.0.1/x.git",
            "https://127.1/x.git",
            "git://127.1/x.git",
            "git://0x7f.0.0.1/x.git",
            "git://2130706433/x.git",
            "http://0/x.git",
            "http://0.0.0.0/x.git",
            "http://10.1.2.3/x.git",
            "http://172.16.0.1/x.git",
            "http://192.168.1.1/x.git",
            "http://169.254.169.254/latest",
            "http://100.64.0.1/x.git",
            "http://[::1]/x.git",
            "git://[::1]:9418/x.git",
            "http://[::]/x.git",
            "http://[fe80::1]/x.git",
            "http://[fd00::1]/x.git",
            "http://[::ffff:127.0.0.1]/x.git",
            "http://[::ffff:10.0.0.1]/x.git",
            "ssh://git@127.0.0.1/x.git",
            "git@localhost:x.git",
            "git@127.0.0.1:x.git",
            "git@[::1]:x.git",
            "192.168.0.1:x.git",
        ] {
            assert!(!allowed(url), "{url}");
            assert!(check_repo_url(url, true).is_ok(), "{url}");
        }
    }

    #[test]
    fn whitespace_control_characters_and_long_urls_are_refused() {
        for url in [
            "",
            "https://github.com/x/y.git ",
            " https://github.com/x/y.git",
            "https://github.com/x y.git",
            "https://github.com/x/y.git\n",
            "https://github.com/x\0/y.git",
            "https://github.com/x\t/y.git",
        ] {
            assert!(!allowed(url), "{url:?}");
            assert!(check_repo_url(url, true).is_err(), "{url:?}");
        }
        let long = format!("https://github.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(!allowed(&long));
        let fits = format!("https://github.com/{}", "a".repeat(MAX_URL_LEN - 40));
        assert!(allowed(&fits));
    }

    #[test]
    fn option_injection_is_refused() {
        for url in [
            "-oProxyCommand=touch /tmp/x",
            "--upload-pack=touch:x",
            "ssh://-oProxyCommand=x/y",
            "ssh://-oProxyCommand@host/y",
            "-host:x",
        ] {
            assert!(!allowed(url), "{url}");
            assert!(check_repo_url(url, true).is_err(), "{url}");
        }
    }

    #[test]
    fn urls_without_host_or_path_are_refused() {
        for url in [
            "https://",
            "https:///x.git",
            "https://github.com",
            "https://github.com/",
            "git@github.com:",
            "@github.com:x",
        ] {
            assert!(!allowed(url), "{url}");
        }
    }

    #[test]
    fn errors_never_repeat_credentials() {
        for url in [
            "ftp://user:s3cret@example.com/x.git",
            "https://user:s3cret@127.0.0.1/x.git",
            "https://user:s3cret@localhost/x.git",
            "user:s3cret@[::1]:x.git",
            "https://user:s3cret@/x.git",
            "https://user:s3cret@github.com/x y.git",
            "user:s3cret@github.com:x/y.git",
        ] {
            let err = check_repo_url(url, false).unwrap_err();
            assert!(!err.contains("s3cret"), "{url}: {err}");
        }
    }

    #[test]
    fn a_parsed_url_keeps_its_text_and_shows_only_its_redacted_form() {
        let url = RepoUrl::parse("https://ada:t0ken@example.com/o/r.git", false).unwrap();
        assert_eq!(url.as_str(), "https://ada:t0ken@example.com/o/r.git");
        assert_eq!(url.redacted(), "https://***@example.com/o/r.git");
        assert_eq!(url.userinfo(), Some("ada:t0ken"));
        assert!(!format!("{url:?}").contains("t0ken"), "{url:?}");
        assert_eq!(url.split_credentials().0, "https://example.com/o/r.git");
        let err = RepoUrl::parse("https://ada:t0ken@10.0.0.1/r.git", false).unwrap_err();
        assert!(
            err.to_string()
                .contains("local repositories are not allowed"),
            "{err}"
        );
        assert!(!err.to_string().contains("t0ken"));
        let local = RepoUrl::parse("file:///srv/r.git", true).unwrap();
        assert_eq!(
            (local.userinfo(), local.redacted().as_str()),
            (None, "file:///srv/r.git")
        );
        assert_eq!(redact("git://h/a@b"), "git://h/a@b");
        assert_eq!(redact("not a url"), "not a url");
    }

    #[test]
    fn credentials_come_out_of_urls_decoded_and_the_rest_stays() {
        let (clean, creds) = split_credentials("https://ada:t%40ken@example.com/o/r.git");
        assert_eq!(clean, "https://example.com/o/r.git");
        let creds = creds.unwrap();
        assert_eq!(
            (creds.user.as_str(), creds.password.as_str()),
            ("ada", "t@ken")
        );
        assert!(!format!("{creds:?}").contains("t@ken"));
        let (clean, creds) = split_credentials("https://example.com/o/r.git");
        assert_eq!(
            (clean.as_str(), creds),
            ("https://example.com/o/r.git", None)
        );
        let (clean, creds) = split_credentials("ssh://git@example.com/o/r.git");
        assert_eq!(
            (clean.as_str(), creds),
            ("ssh://git@example.com/o/r.git", None)
        );
        let (clean, creds) = split_credentials("git@example.com:o/r.git");
        assert_eq!((clean.as_str(), creds), ("git@example.com:o/r.git", None));
    }
}
