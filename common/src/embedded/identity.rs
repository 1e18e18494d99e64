//! The built-in token issuer of `jobq standalone`: users from configuration with their
//! passwords held only as Argon2 hashes, and ES256 tokens signed with a key kept in the
//! data directory, validated like the identity provider's (signature, issuer, audience,
//! `exp`, `nbf`).

use std::path::Path;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use async_trait::async_trait;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::{ErrorKind, PortError, PortResult};
use crate::ports::{PasswordLogin, Principal, TokenValidator};

/// Issuer and audience of standalone tokens.
pub const ISSUER: &str = "jobq-standalone";
pub const AUDIENCE: &str = "jobq";

/// A user as configured: `name:password[:role,role]`, where the password may be given as
/// an Argon2 PHC string (`$argon2id$…`) instead of plain text.
#[derive(Debug, Clone)]
struct User {
    name: String,
    hash: String,
    roles: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    preferred_username: String,
    realm_access: RealmAccess,
    iat: u64,
    nbf: u64,
    exp: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct RealmAccess {
    roles: Vec<String>,
}

/// [`PasswordLogin`] and [`TokenValidator`] without an identity provider.
pub struct LocalIdentity {
    users: Vec<User>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    lifetime: Duration,
    leeway_secs: u64,
}

impl std::fmt::Debug for LocalIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.users.iter().map(|u| u.name.as_str()).collect();
        f.debug_struct("LocalIdentity")
            .field("users", &names)
            .finish_non_exhaustive()
    }
}

fn invalid(message: impl Into<String>) -> PortError {
    PortError::new(ErrorKind::Invalid, message)
}

/// A fresh random salt.
fn salt() -> PortResult<SaltString> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| PortError::internal("no randomness for a salt"))?;
    SaltString::encode_b64(&bytes).map_err(|_| PortError::internal("cannot encode a salt"))
}

/// Parses the user list (`standalone.users`): each entry `name:password[:roles]`.
fn parse_users(entries: &[impl AsRef<str>]) -> PortResult<Vec<User>> {
    let argon = Argon2::default();
    let mut users = Vec::new();
    for entry in entries.iter().map(AsRef::as_ref) {
        let mut parts = entry.splitn(3, ':');
        let (Some(name), Some(secret)) = (parts.next(), parts.next()) else {
            return Err(invalid(format!(
                "standalone.users: entry for {:?} has no password",
                entry.split(':').next().unwrap_or("")
            )));
        };
        if name.is_empty() || secret.is_empty() {
            return Err(invalid("standalone.users: empty user name or password"));
        }
        let hash = if secret.starts_with("$argon2") {
            let parsed = PasswordHash::new(secret)
                .ok()
                .filter(|h| h.hash.is_some() && h.salt.is_some());
            if parsed.is_none() {
                return Err(invalid(format!(
                    "standalone.users: bad password hash for {name}"
                )));
            }
            secret.to_string()
        } else {
            argon
                .hash_password(secret.as_bytes(), &salt()?)
                .map_err(|e| {
                    invalid(format!(
                        "standalone.users: cannot hash the password of {name}: {e}"
                    ))
                })?
                .to_string()
        };
        let roles = parts
            .next()
            .map(|r| {
                r.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        users.push(User {
            name: name.to_string(),
            hash,
            roles,
        });
    }
    if users.is_empty() {
        return Err(invalid("standalone.users: no users configured"));
    }
    Ok(users)
}

/// Loads the signing key from `path`, creating it (mode 0600) on first start so tokens
/// survive a restart.
fn signing_key(path: &Path) -> PortResult<Vec<u8>> {
    if let Ok(bytes) = std::fs::read(path) {
        return Ok(bytes);
    }
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .map_err(|_| PortError::internal("cannot generate a signing key"))?;
    let bytes = doc.as_ref().to_vec();
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            PortError::with_source(
                ErrorKind::Unavailable,
                format!("cannot write {}", path.display()),
                e,
            )
        })?;
    file.write_all(&bytes).map_err(|e| {
        PortError::with_source(
            ErrorKind::Unavailable,
            format!("cannot write {}", path.display()),
            e,
        )
    })?;
    Ok(bytes)
}

impl LocalIdentity {
    /// Users from `users` (see [`parse_users`]), key in `key_path`.
    pub fn new(
        users: &[impl AsRef<str>],
        key_path: &Path,
        lifetime: Duration,
        leeway_secs: u64,
    ) -> PortResult<Self> {
        let users = parse_users(users)?;
        let pkcs8 = signing_key(key_path)?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8)
            .map_err(|_| invalid(format!("{} is not a P-256 key", key_path.display())))?;
        Ok(Self {
            users,
            encoding: EncodingKey::from_ec_der(&pkcs8),
            decoding: DecodingKey::from_ec_der(pair.public_key().as_ref()),
            lifetime,
            leeway_secs,
        })
    }

    /// Issues a token for `user` (no password check): for tests and the CLI's own use.
    pub fn issue(&self, user: &str) -> PortResult<String> {
        let u = self
            .users
            .iter()
            .find(|u| u.name == user)
            .ok_or_else(|| PortError::not_found("no such user"))?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: u.name.clone(),
            preferred_username: u.name.clone(),
            realm_access: RealmAccess {
                roles: u.roles.clone(),
            },
            iat: now,
            nbf: now,
            exp: now + self.lifetime.as_secs(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.encoding)
            .map_err(|e| PortError::with_source(ErrorKind::Internal, "cannot sign a token", e))
    }
}

#[async_trait]
impl PasswordLogin for LocalIdentity {
    async fn login(&self, username: &str, password: &str) -> PortResult<String> {
        let refused = || PortError::new(ErrorKind::Unauthorized, "wrong user name or password");
        let user = self.users.iter().find(|u| u.name == username);
        // Verify against some hash even for an unknown user, so timing does not tell.
        let hash = user
            .map(|u| u.hash.clone())
            .unwrap_or_else(|| self.users[0].hash.clone());
        let password = password.to_string();
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).is_ok_and(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false);
        match (user, ok) {
            (Some(u), true) => self.issue(&u.name),
            _ => Err(refused()),
        }
    }
}

#[async_trait]
impl TokenValidator for LocalIdentity {
    async fn validate(&self, token: &str) -> PortResult<Principal> {
        let unauthorized = |m: String| PortError::new(ErrorKind::Unauthorized, m);
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| unauthorized(format!("malformed token: {e}")))?;
        if header.alg != Algorithm::ES256 {
            return Err(unauthorized(format!(
                "token algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway_secs;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|e| unauthorized(format!("invalid token: {e}")))?;
        let c = data.claims;
        Ok(Principal {
            username: c.preferred_username,
            subject: c.sub,
            roles: c.realm_access.roles,
            numeric_claims: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(dir: &Path) -> LocalIdentity {
        LocalIdentity::new(
            &["myuser:1234", "admin:admin:admin,ops"],
            &dir.join("key"),
            Duration::from_secs(60),
            0,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_login_gives_a_token_that_validates_with_roles() {
        let dir = std::env::temp_dir().join(format!("jobq-id-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let id = identity(&dir);
        let who = id
            .validate(&id.login("myuser", "1234").await.unwrap())
            .await
            .unwrap();
        assert_eq!(who.username, "myuser");
        assert!(who.roles.is_empty());
        let admin = id
            .validate(&id.login("admin", "admin").await.unwrap())
            .await
            .unwrap();
        assert_eq!(admin.roles, ["admin", "ops"]);
        assert_eq!(
            id.login("myuser", "wrong").await.unwrap_err().kind,
            ErrorKind::Unauthorized
        );
        assert_eq!(
            id.login("nobody", "1234").await.unwrap_err().kind,
            ErrorKind::Unauthorized
        );
        // The key persists: a second instance accepts the first one's tokens.
        let token = id.issue("myuser").unwrap();
        assert_eq!(
            identity(&dir).validate(&token).await.unwrap().username,
            "myuser"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn forged_expired_and_unsigned_tokens_are_refused() {
        let dir = std::env::temp_dir().join(format!("jobq-id-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let id = identity(&dir);
        let other_dir = dir.join("other");
        std::fs::create_dir_all(&other_dir).unwrap();
        let other = identity(&other_dir);
        let refused =
            |r: PortResult<Principal>| assert_eq!(r.unwrap_err().kind, ErrorKind::Unauthorized);
        refused(id.validate(&other.issue("myuser").unwrap()).await);
        let short = LocalIdentity::new(
            &["myuser:1234"],
            &dir.join("key"),
            Duration::from_secs(0),
            0,
        )
        .unwrap();
        let expired = short.issue("myuser").unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        refused(id.validate(&expired).await);
        let body = id
            .issue("myuser")
            .unwrap()
            .split('.')
            .nth(1)
            .unwrap()
            .to_string();
        refused(id.validate(&format!("eyJhbGciOiJub25lIn0.{body}.")).await);
        refused(id.validate("garbage").await);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn hashes_are_accepted_and_bad_entries_named() {
        let hash = Argon2::default()
            .hash_password(b"pw", &salt().unwrap())
            .unwrap()
            .to_string();
        let users = parse_users(&[format!("u:{hash}")]).unwrap();
        assert_eq!(users[0].hash, hash);
        assert!(
            parse_users(&["nopassword"])
                .unwrap_err()
                .to_string()
                .contains("nopassword")
        );
        assert!(parse_users(&[] as &[&str]).is_err());
        assert!(parse_users(&["u:$argon2id$broken"]).is_err());
    }
}
