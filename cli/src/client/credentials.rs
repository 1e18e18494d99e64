//! Which server to talk to and with which token: flags first, then `JOBQ_URL` /
//! `JOBQ_TOKEN`, then the saved login (`${XDG_CONFIG_HOME:-~/.config}/jobq/login.json`).
//! The saved token is only sent to the server it was issued by.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use url::Url;

use super::{ClientError, ClientResult, Connection};

/// The server when nothing names one: where `jobq standalone` listens by default.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// What `jobq login` saves.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedLogin {
    pub url: String,
    pub token: String,
    pub user: String,
}

impl std::fmt::Debug for SavedLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SavedLogin")
            .field("url", &self.url)
            .field("token", &"[redacted]")
            .field("user", &self.user)
            .finish()
    }
}

/// `JOBQ_URL` and `JOBQ_TOKEN`, empty values counting as unset.
#[derive(Debug, Clone, Default)]
pub struct EnvCredentials {
    pub url: Option<String>,
    pub token: Option<String>,
}

impl EnvCredentials {
    pub fn from_env() -> Self {
        EnvCredentials {
            url: non_empty(std::env::var("JOBQ_URL").ok()),
            token: non_empty(std::env::var("JOBQ_TOKEN").ok()),
        }
    }
}

/// The server and token a command uses.
#[derive(Clone)]
pub struct Resolved {
    pub url: Url,
    pub token: Option<String>,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("url", &self.url.as_str())
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

/// Parses a server URL; only http and https are accepted.
pub fn parse_server_url(raw: &str) -> ClientResult<Url> {
    let url = Url::parse(raw.trim()).map_err(|e| {
        ClientError::usage(format!(
            "server URL `{raw}` is not valid ({e}); give one like {DEFAULT_URL} with --url or JOBQ_URL"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ClientError::usage(format!(
            "server URL `{raw}` is not an http(s) URL; give one like {DEFAULT_URL} with --url or JOBQ_URL"
        )));
    }
    Ok(url)
}

/// Two server URLs name the same server when they are equal up to a trailing slash.
fn same_server(a: &Url, b: &Url) -> bool {
    a.as_str().trim_end_matches('/') == b.as_str().trim_end_matches('/')
}

/// Flags win over the environment, which wins over the saved login. The saved token is
/// used only when the URL resolved to the saved login's server, so a token is never sent
/// to a server that did not issue it.
pub fn resolve(
    flags: &Connection,
    env: &EnvCredentials,
    saved: Option<&SavedLogin>,
) -> ClientResult<Resolved> {
    let saved_url = saved.and_then(|s| Url::parse(&s.url).ok());
    let url = match non_empty(flags.url.clone()).or_else(|| env.url.clone()) {
        Some(raw) => parse_server_url(&raw)?,
        None => match &saved_url {
            Some(url) => url.clone(),
            None => parse_server_url(DEFAULT_URL)?,
        },
    };
    let saved_token = match (saved, &saved_url) {
        (Some(saved), Some(saved_url)) if same_server(saved_url, &url) => {
            non_empty(Some(saved.token.clone()))
        }
        _ => None,
    };
    let token = non_empty(flags.token.clone())
        .or_else(|| env.token.clone())
        .or(saved_token);
    Ok(Resolved { url, token })
}

/// `${XDG_CONFIG_HOME:-~/.config}/jobq/login.json`, or `None` without either variable.
pub fn saved_login_path() -> Option<PathBuf> {
    let base = non_empty(std::env::var("XDG_CONFIG_HOME").ok())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            non_empty(std::env::var("HOME").ok()).map(|home| Path::new(&home).join(".config"))
        })?;
    Some(base.join("jobq").join("login.json"))
}

impl SavedLogin {
    /// The saved login, `None` when there is none.
    pub fn load() -> ClientResult<Option<SavedLogin>> {
        match saved_login_path() {
            Some(path) => Self::load_from(&path),
            None => Ok(None),
        }
    }

    pub fn load_from(path: &Path) -> ClientResult<Option<SavedLogin>> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(ClientError::usage(format!(
                    "cannot read the saved login {}: {e}",
                    path.display()
                )));
            }
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            ClientError::usage(format!(
                "the saved login {} is not valid: {e}",
                path.display()
            ))
        })
    }

    /// Saves the login where [`SavedLogin::load`] finds it.
    pub fn save(&self) -> ClientResult<PathBuf> {
        let path = saved_login_path().ok_or_else(|| {
            ClientError::usage("cannot save the login: neither XDG_CONFIG_HOME nor HOME is set")
        })?;
        self.save_to(&path)?;
        Ok(path)
    }

    /// Writes the file readable by its owner only (0600, folder 0700), replacing any
    /// older one atomically.
    pub fn save_to(&self, path: &Path) -> ClientResult<()> {
        let fail = |e: std::io::Error| {
            ClientError::usage(format!("cannot save the login to {}: {e}", path.display()))
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(fail)?;
        let temporary = dir.join(format!(".login.json.{}", std::process::id()));
        let _ = fs::remove_file(&temporary);
        let body =
            serde_json::to_vec_pretty(self).map_err(|e| ClientError::other(e.to_string()))?;
        let written = (|| {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temporary)?;
            file.write_all(&body)?;
            file.sync_all()?;
            fs::rename(&temporary, path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&temporary);
            return Err(fail(e));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn flags(url: Option<&str>, token: Option<&str>) -> Connection {
        Connection {
            url: url.map(Into::into),
            token: token.map(Into::into),
            json: false,
        }
    }

    fn env(url: Option<&str>, token: Option<&str>) -> EnvCredentials {
        EnvCredentials {
            url: url.map(Into::into),
            token: token.map(Into::into),
        }
    }

    fn saved(url: &str, token: &str) -> SavedLogin {
        SavedLogin {
            url: url.into(),
            token: token.into(),
            user: "myuser".into(),
        }
    }

    #[test]
    fn flags_win_over_environment_and_saved_login() {
        let saved = saved("http://saved:1", "saved-token");
        let r = resolve(
            &flags(Some("http://flag:1"), Some("flag-token")),
            &env(Some("http://env:1"), Some("env-token")),
            Some(&saved),
        )
        .unwrap();
        assert_eq!(r.url.as_str(), "http://flag:1/");
        assert_eq!(r.token.as_deref(), Some("flag-token"));
    }

    #[test]
    fn environment_wins_over_saved_login() {
        let saved = saved("http://saved:1", "saved-token");
        let r = resolve(
            &flags(None, None),
            &env(Some("http://env:1"), Some("env-token")),
            Some(&saved),
        )
        .unwrap();
        assert_eq!(r.url.as_str(), "http://env:1/");
        assert_eq!(r.token.as_deref(), Some("env-token"));
    }

    #[test]
    fn saved_login_is_used_when_nothing_else_is_given() {
        let saved = saved("http://saved:1", "saved-token");
        let r = resolve(&flags(None, None), &env(None, None), Some(&saved)).unwrap();
        assert_eq!(r.url.as_str(), "http://saved:1/");
        assert_eq!(r.token.as_deref(), Some("saved-token"));
    }

    #[test]
    fn saved_token_is_not_sent_to_another_server() {
        let saved = saved("http://saved:1", "saved-token");
        let r = resolve(
            &flags(Some("http://other:1"), None),
            &env(None, None),
            Some(&saved),
        )
        .unwrap();
        assert_eq!(r.url.as_str(), "http://other:1/");
        assert_eq!(r.token, None);
        let r = resolve(
            &flags(None, None),
            &env(Some("http://other:1"), None),
            Some(&saved),
        )
        .unwrap();
        assert_eq!(r.token, None);
    }

    #[test]
    fn saved_token_goes_to_its_own_server_named_by_a_flag() {
        let saved = saved("http://saved:1", "saved-token");
        let r = resolve(
            &flags(Some("http://saved:1/"), None),
            &env(None, None),
            Some(&saved),
        )
        .unwrap();
        assert_eq!(r.token.as_deref(), Some("saved-token"));
    }

    #[test]
    fn default_url_without_any_source() {
        let r = resolve(&flags(None, None), &env(None, None), None).unwrap();
        assert_eq!(r.url.as_str(), "http://127.0.0.1:8080/");
        assert_eq!(r.token, None);
    }

    #[test]
    fn empty_values_count_as_unset() {
        let saved = saved("http://saved:1", "saved-token");
        let r = resolve(&flags(Some(""), Some(" ")), &env(None, None), Some(&saved)).unwrap();
        assert_eq!(r.url.as_str(), "http://saved:1/");
        assert_eq!(r.token.as_deref(), Some("saved-token"));
    }

    #[test]
    fn non_http_urls_are_usage_errors() {
        for bad in ["ftp://x", "not a url", "127.0.0.1:8080", "file:///tmp"] {
            let e = resolve(&flags(Some(bad), None), &env(None, None), None).unwrap_err();
            assert_eq!(e.kind, super::super::FailureKind::Usage, "{bad}");
            assert!(e.message.contains("--url"), "{}", e.message);
        }
    }

    #[test]
    fn saved_login_round_trips_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/jobq/login.json");
        let login = saved("http://saved:1", "secret");
        login.save_to(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        assert_eq!(SavedLogin::load_from(&path).unwrap(), Some(login));
        // Saving again replaces the file.
        let second = saved("http://saved:2", "other");
        second.save_to(&path).unwrap();
        assert_eq!(SavedLogin::load_from(&path).unwrap(), Some(second));
    }

    #[test]
    fn missing_saved_login_is_none_and_corrupt_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("login.json");
        assert_eq!(SavedLogin::load_from(&path).unwrap(), None);
        fs::write(&path, "{not json").unwrap();
        assert!(SavedLogin::load_from(&path).is_err());
    }

    #[test]
    fn debug_output_hides_tokens() {
        let login = saved("http://saved:1", "secret-token");
        assert!(!format!("{login:?}").contains("secret-token"));
        let r = resolve(&flags(None, Some("secret-token")), &env(None, None), None).unwrap();
        assert!(!format!("{r:?}").contains("secret-token"));
    }
}
