//! `jobq login`: exchanges a user name and password for a token (`POST /auth/token`) and
//! saves it with the server URL.

use std::io::{BufRead, IsTerminal, Write};

use jobq_frontend::dto::TokenGrant;
use reqwest::{Method, StatusCode};

use super::api::{Api, REQUEST_TIMEOUT, error_text};
use super::credentials::SavedLogin;
use super::{ClientError, ClientResult, FailureKind};

pub async fn login(
    api: &Api,
    user: Option<String>,
    password: Option<String>,
    json: bool,
) -> ClientResult<()> {
    let (user, password) = credentials(user, password)?;
    let request = api
        .request(Method::POST, api.url(["auth", "token"]))
        .timeout(REQUEST_TIMEOUT)
        .form(&[("username", user.as_str()), ("password", password.as_str())]);
    let response = api.transport(request).await?;
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED {
        return Err(ClientError::new(
            FailureKind::Auth,
            format!("wrong user name or password for {}", api.server()),
        ));
    }
    if !status.is_success() {
        let text = error_text(response).await;
        return Err(api.refused(status, text));
    }
    let grant: TokenGrant = response.json().await.map_err(|e| api.transport_error(e))?;
    let saved = SavedLogin {
        url: api.server().to_owned(),
        token: grant.access_token,
        user: user.clone(),
    };
    let path = saved.save()?;
    if json {
        let answer = serde_json::json!({"url": saved.url, "user": user, "saved": path});
        println!("{answer:#}");
    } else {
        println!("logged in as {user} at {}", saved.url);
    }
    Ok(())
}

/// The flags, or on a terminal what the user types; without a terminal both are needed.
fn credentials(user: Option<String>, password: Option<String>) -> ClientResult<(String, String)> {
    let interactive = std::io::stdin().is_terminal();
    let user = match user.filter(|u| !u.is_empty()) {
        Some(user) => user,
        None if interactive => prompt_line("user: ")?,
        None => {
            return Err(ClientError::usage(
                "--user and --password are needed when standard input is not a terminal",
            ));
        }
    };
    let password = match password {
        Some(password) => password,
        None if interactive => rpassword::prompt_password(format!("password for {user}: "))
            .map_err(|e| ClientError::usage(format!("cannot read the password: {e}")))?,
        None => {
            return Err(ClientError::usage(
                "--password is needed when standard input is not a terminal",
            ));
        }
    };
    if user.trim().is_empty() {
        return Err(ClientError::usage("the user name is empty"));
    }
    Ok((user, password))
}

fn prompt_line(prompt: &str) -> ClientResult<String> {
    let mut stderr = std::io::stderr();
    let _ = write!(stderr, "{prompt}");
    let _ = stderr.flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| ClientError::usage(format!("cannot read the user name: {e}")))?;
    Ok(line.trim().to_owned())
}
