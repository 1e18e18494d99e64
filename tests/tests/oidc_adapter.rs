//! The OpenID Connect adapter against the real Keycloak realm `jobq`.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jobq_common::ErrorKind;
use jobq_common::oidc::OidcClient;
use jobq_common::ports::{PasswordLogin, TokenValidator};
use jobq_common::settings::OidcSettings;
use jobq_tests::infra_settings;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::SecretString;

fn realm() -> Option<OidcSettings> {
    Some(infra_settings("oidc adapter").oidc)
}

/// The realm's short-lived test client: its tokens expire after one second and carry
/// `azp=jobq-test-short`, not the frontend's audience.
fn short_lived(base: &OidcSettings) -> OidcSettings {
    OidcSettings {
        client_id: "jobq-test-short".into(),
        client_secret: SecretString::from("jobq-test-short-secret"),
        audience: "jobq-test-short".into(),
        leeway_secs: 0,
        ..base.clone()
    }
}

fn payload(token: &str) -> serde_json::Value {
    let part = token.split('.').nth(1).expect("three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

async fn assert_refused(validator: &OidcClient, token: &str, why: &str) {
    let err = validator.validate(token).await.expect_err(why);
    assert_eq!(err.kind, ErrorKind::Unauthorized, "{why}: {err}");
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn a_password_grant_token_validates_with_its_user_and_roles() {
    let Some(settings) = realm() else { return };
    let client = OidcClient::new(settings);
    let token = client
        .login("myuser", "1234")
        .await
        .expect("password grant");
    let who = client.validate(&token).await.expect("valid token");
    assert_eq!(who.username, "myuser");
    assert!(!who.has_role("admin"));
    let admin = client
        .validate(&client.login("admin", "admin").await.unwrap())
        .await
        .unwrap();
    assert!(admin.has_role("admin"), "{admin:?}");
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn a_wrong_password_is_refused() {
    let Some(settings) = realm() else { return };
    let client = OidcClient::new(settings);
    let err = client.login("myuser", "wrong").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthorized, "{err}");
    let err = client.login("nobody", "1234").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthorized, "{err}");
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn an_expired_token_is_refused() {
    let Some(settings) = realm() else { return };
    let client = OidcClient::new(short_lived(&settings));
    let token = client
        .login("myuser", "1234")
        .await
        .expect("short-lived token");
    client.validate(&token).await.expect("valid while fresh");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let err = client.validate(&token).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthorized);
    assert!(err.to_string().contains("Expired"), "{err}");
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn a_token_for_another_audience_is_refused() {
    let Some(settings) = realm() else { return };
    let other = OidcClient::new(short_lived(&settings))
        .login("myuser", "1234")
        .await
        .unwrap();
    assert_refused(
        &OidcClient::new(settings),
        &other,
        "token of another client",
    )
    .await;
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn forged_and_unsigned_tokens_are_refused() {
    let Some(settings) = realm() else { return };
    let client = OidcClient::new(settings);
    let real = client.login("myuser", "1234").await.unwrap();
    let kid = jsonwebtoken::decode_header(&real).unwrap().kid.unwrap();
    let mut claims = payload(&real);
    claims["preferred_username"] = "admin".into();
    claims["realm_access"] = serde_json::json!({"roles": ["admin"]});

    // Same key id, same claims, another private key.
    let foreign =
        EncodingKey::from_rsa_pem(include_bytes!("../fixtures/foreign-rsa-key.pem")).unwrap();
    let header = Header {
        kid: Some(kid.clone()),
        ..Header::new(Algorithm::RS256)
    };
    let forged = jsonwebtoken::encode(&header, &claims, &foreign).unwrap();
    assert_refused(&client, &forged, "signed by another key").await;

    // A key id the realm never had: refreshes the key set once, then refuses.
    let header = Header {
        kid: Some("no-such-key".into()),
        ..Header::new(Algorithm::RS256)
    };
    assert_refused(
        &client,
        &jsonwebtoken::encode(&header, &claims, &foreign).unwrap(),
        "unknown kid",
    )
    .await;

    // alg=none with the real claims.
    let none_header =
        URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","typ":"JWT","kid":"{kid}"}}"#));
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    assert_refused(&client, &format!("{none_header}.{body}."), "alg=none").await;

    // HS256 keyed with public material: the classic algorithm-confusion forgery.
    let header = Header {
        kid: Some(kid),
        ..Header::new(Algorithm::HS256)
    };
    let hs = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(b"public")).unwrap();
    assert_refused(&client, &hs, "HS256").await;

    // A real token with its signature swapped for another's.
    let mut parts: Vec<&str> = real.split('.').collect();
    let sig_of_forged = forged.split('.').nth(2).unwrap();
    parts[2] = sig_of_forged;
    assert_refused(&client, &parts.join("."), "tampered signature").await;

    for junk in ["", "abc", "a.b.c", "Bearer x"] {
        assert_refused(&client, junk, "junk").await;
    }
    client
        .validate(&real)
        .await
        .expect("the real token still validates");
}
