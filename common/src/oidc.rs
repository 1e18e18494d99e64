//! OpenID Connect: discovery, a JWKS cache keyed by `kid` (refreshed on an unknown `kid`,
//! at most once per cooldown), RS256/ES256-family token validation (`iss`, audience or
//! `azp`, `exp`, `nbf` with a small leeway), and the password grant used by `/auth`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jsonwebtoken::jwk::{JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::{Mutex, OnceCell, RwLock};

use crate::error::{ErrorKind, PortError, PortResult};
use crate::ports::{PasswordLogin, Principal, TokenValidator};
use crate::settings::OidcSettings;

/// Only asymmetric algorithms: a token signed with a shared secret (HS256) or none at all
/// is refused before any key is looked at.
const ALLOWED: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
    token_endpoint: String,
    #[serde(default)]
    authorization_endpoint: Option<String>,
    #[serde(default)]
    end_session_endpoint: Option<String>,
}

/// Where a browser signs in with the authorization code flow: the realm's login page and
/// the endpoint that exchanges the code for tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserEndpoints {
    pub authorization: String,
    pub token: String,
    /// Where a browser signs out of the realm, if it has such an endpoint.
    pub end_session: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: Option<String>,
    preferred_username: Option<String>,
    azp: Option<String>,
    #[serde(default)]
    aud: Option<serde_json::Value>,
    #[serde(default)]
    realm_access: Option<RealmAccess>,
    #[serde(default)]
    roles: Option<Vec<String>>,
    #[serde(flatten)]
    others: HashMap<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct RealmAccess {
    #[serde(default)]
    roles: Vec<String>,
}

fn unauthorized(message: impl Into<String>) -> PortError {
    PortError::new(ErrorKind::Unauthorized, message)
}

/// Validates the realm's tokens and performs the password grant.
pub struct OidcClient {
    settings: OidcSettings,
    http: reqwest::Client,
    discovery: OnceCell<Discovery>,
    keys: RwLock<HashMap<String, DecodingKey>>,
    last_refresh: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcClient")
            .field("issuer", &self.settings.issuer)
            .finish_non_exhaustive()
    }
}

impl OidcClient {
    /// Builds the client; discovery happens on first use, so the service can start before
    /// the identity provider answers.
    pub fn new(settings: OidcSettings) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            settings,
            http,
            discovery: OnceCell::new(),
            keys: RwLock::new(HashMap::new()),
            last_refresh: Mutex::new(None),
        }
    }

    /// Loads discovery and the key set now; returns how many signing keys the realm has.
    pub async fn ready(&self) -> PortResult<usize> {
        *self.last_refresh.lock().await = None;
        self.refresh_keys().await?;
        Ok(self.keys.read().await.len())
    }

    /// The realm's authorization and token endpoints, from discovery.
    pub async fn browser_endpoints(&self) -> PortResult<BrowserEndpoints> {
        let doc = self.discovery().await?;
        let authorization = doc.authorization_endpoint.clone().ok_or_else(|| {
            PortError::unavailable("the identity provider names no authorization endpoint")
        })?;
        Ok(BrowserEndpoints {
            authorization,
            token: doc.token_endpoint.clone(),
            end_session: doc.end_session_endpoint.clone(),
        })
    }

    async fn discovery(&self) -> PortResult<&Discovery> {
        self.discovery
            .get_or_try_init(|| async {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.settings.issuer.trim_end_matches('/')
                );
                let doc: Discovery = self.get_json(&url).await?;
                if doc.issuer != self.settings.issuer.trim_end_matches('/') {
                    return Err(PortError::invalid(format!(
                        "the identity provider calls itself {} but oidc.issuer is {}",
                        doc.issuer, self.settings.issuer
                    )));
                }
                Ok(doc)
            })
            .await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> PortResult<T> {
        let response = self.http.get(url).send().await.map_err(|e| {
            PortError::with_source(ErrorKind::Unavailable, "identity provider unreachable", e)
        })?;
        if !response.status().is_success() {
            return Err(PortError::unavailable(format!(
                "{url} answered {}",
                response.status()
            )));
        }
        response.json().await.map_err(|e| {
            PortError::with_source(ErrorKind::Unavailable, format!("bad answer from {url}"), e)
        })
    }

    /// Fetches the JWKS again unless that happened within the cooldown.
    async fn refresh_keys(&self) -> PortResult<()> {
        let mut last = self.last_refresh.lock().await;
        let cooldown = Duration::from_secs(self.settings.jwks_refresh_cooldown_secs);
        if last.is_some_and(|t| t.elapsed() < cooldown) {
            return Ok(());
        }
        let discovery = self.discovery().await?;
        let set: JwkSet = self.get_json(&discovery.jwks_uri).await?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let (Some(kid), Ok(key)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk))
            else {
                continue;
            };
            keys.insert(kid, key);
        }
        tracing::debug!(keys = keys.len(), "jwks refreshed");
        *self.keys.write().await = keys;
        *last = Some(Instant::now());
        Ok(())
    }

    async fn key_for(&self, kid: &str) -> PortResult<Option<DecodingKey>> {
        if let Some(key) = self.keys.read().await.get(kid) {
            return Ok(Some(key.clone()));
        }
        self.refresh_keys().await?;
        Ok(self.keys.read().await.get(kid).cloned())
    }

    fn audience_ok(&self, claims: &Claims) -> bool {
        let wanted = self.settings.audience.as_str();
        let in_aud = match &claims.aud {
            Some(serde_json::Value::String(s)) => s == wanted,
            Some(serde_json::Value::Array(items)) => {
                items.iter().any(|v| v.as_str() == Some(wanted))
            }
            _ => false,
        };
        in_aud || claims.azp.as_deref() == Some(wanted)
    }
}

#[async_trait]
impl TokenValidator for OidcClient {
    async fn validate(&self, token: &str) -> PortResult<Principal> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| unauthorized(format!("malformed token: {e}")))?;
        if !ALLOWED.contains(&header.alg) {
            return Err(unauthorized(format!(
                "token algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| unauthorized("token has no key id"))?;
        let key = self
            .key_for(&kid)
            .await?
            .ok_or_else(|| unauthorized("token signed by an unknown key"))?;
        let discovery = self.discovery().await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&discovery.issuer]);
        validation.set_required_spec_claims(&["exp", "iss"]);
        validation.validate_nbf = true;
        validation.validate_aud = false; // checked below: `aud` or `azp` may carry it
        validation.leeway = self.settings.leeway_secs;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|e| unauthorized(format!("invalid token: {e}")))?;
        let claims = data.claims;
        if !self.audience_ok(&claims) {
            return Err(unauthorized("token is not meant for this service"));
        }
        let subject = claims.sub.clone().unwrap_or_default();
        let username = claims
            .preferred_username
            .clone()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| subject.clone());
        if username.is_empty() {
            return Err(unauthorized("token names no user"));
        }
        let mut roles = claims.realm_access.map(|r| r.roles).unwrap_or_default();
        roles.extend(claims.roles.unwrap_or_default());
        Ok(Principal {
            username,
            subject,
            roles,
            numeric_claims: Principal::numeric(&claims.others),
        })
    }
}

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    access_token: String,
}

#[async_trait]
impl PasswordLogin for OidcClient {
    async fn login(&self, username: &str, password: &str) -> PortResult<String> {
        let discovery = self.discovery().await?;
        let secret: &SecretString = &self.settings.client_secret;
        let mut form = vec![
            ("grant_type", "password"),
            ("client_id", self.settings.client_id.as_str()),
            ("username", username),
            ("password", password),
            ("scope", "openid"),
        ];
        if !secret.expose_secret().is_empty() {
            form.push(("client_secret", secret.expose_secret()));
        }
        let response = self
            .http
            .post(&discovery.token_endpoint)
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                PortError::with_source(ErrorKind::Unavailable, "identity provider unreachable", e)
            })?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::BAD_REQUEST
        {
            return Err(unauthorized("wrong user name or password"));
        }
        if !status.is_success() {
            return Err(PortError::unavailable(format!(
                "identity provider answered {status}"
            )));
        }
        let answer: TokenAnswer = response
            .json()
            .await
            .map_err(|e| PortError::with_source(ErrorKind::Unavailable, "bad token answer", e))?;
        Ok(answer.access_token)
    }
}
