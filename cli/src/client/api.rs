//! The HTTP side of the client: builds URLs under the server's base URL, sends the
//! token, and turns transport failures and error answers into [`ClientError`]s that say
//! what to do.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;

use super::credentials::Resolved;
use super::{ClientError, ClientResult, FailureKind};

/// Time to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for an API answer (downloads are not bounded: they stream).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A jobq server and the caller's token.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

/// What a 404 means for one request, in words for the user.
#[derive(Debug, Clone, Copy)]
pub enum Missing<'a> {
    Job(&'a str),
    File {
        id: &'a str,
        file: &'a str,
    },
    /// A route that always exists on a jobq server.
    Route,
}

impl Missing<'_> {
    fn message(self) -> String {
        match self {
            Missing::Job(id) => format!("no job {id} (or it is not yours)"),
            Missing::File { id, file } => {
                format!("job {id} has no output file `{file}`; `jobq results {id}` lists its files")
            }
            Missing::Route => {
                "the server has no such route: is it a jobq server of this version?".into()
            }
        }
    }
}

impl Api {
    pub fn new(resolved: Resolved) -> ClientResult<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("jobq-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| ClientError::other(format!("cannot build the HTTP client: {e}")))?;
        Ok(Api {
            http,
            base: resolved.url,
            token: resolved.token,
        })
    }

    /// The server's base URL as the user gave it, without a trailing slash.
    pub fn server(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `base` + the path segments, each percent-encoded (a job's file `a/b.txt` is
    /// pushed as the segments `a` and `b.txt`).
    pub fn url<'a>(&self, segments: impl IntoIterator<Item = &'a str>) -> Url {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// A request with the token, if there is one.
    pub fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let request = self.http.request(method, url);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends a request and answers the response when its status is a success.
    pub async fn send(
        &self,
        request: RequestBuilder,
        missing: Missing<'_>,
    ) -> ClientResult<Response> {
        let response = self.transport(request).await?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let server_text = error_text(response).await;
        Err(match status {
            StatusCode::UNAUTHORIZED => ClientError::new(
                FailureKind::Auth,
                match self.token {
                    Some(_) => format!(
                        "the token was refused by {} (expired or for another server): run `jobq login`",
                        self.server()
                    ),
                    None => format!(
                        "not logged in to {}: run `jobq login` (or set --token or JOBQ_TOKEN)",
                        self.server()
                    ),
                },
            ),
            StatusCode::NOT_FOUND => match server_text {
                Some(text) if text == "no such route" => self.not_jobq(status),
                Some(_) => ClientError::new(FailureKind::NotFound, missing.message()),
                None => self.not_jobq(status),
            },
            _ => self.refused(status, server_text),
        })
    }

    /// Sends a request; only transport failures are errors.
    pub async fn transport(&self, request: RequestBuilder) -> ClientResult<Response> {
        request.send().await.map_err(|e| self.transport_error(e))
    }

    /// Sends a request and reads its JSON answer as `T`, also answering the raw JSON.
    pub async fn json<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
        missing: Missing<'_>,
    ) -> ClientResult<(T, serde_json::Value)> {
        let response = self.send(request.timeout(REQUEST_TIMEOUT), missing).await?;
        let raw: serde_json::Value = response.json().await.map_err(|e| self.transport_error(e))?;
        let value = serde_json::from_value(raw.clone()).map_err(|e| {
            ClientError::other(format!(
                "unexpected answer from {} (is it a jobq server of the same version?): {e}",
                self.server()
            ))
        })?;
        Ok((value, raw))
    }

    pub fn transport_error(&self, e: reqwest::Error) -> ClientError {
        if e.is_connect() {
            ClientError::new(
                FailureKind::Unreachable,
                format!(
                    "cannot reach jobq at {}: is `jobq standalone` (or `jobq frontend`) running? set --url or JOBQ_URL",
                    self.server()
                ),
            )
        } else if e.is_timeout() {
            ClientError::new(
                FailureKind::Unreachable,
                format!(
                    "jobq at {} did not answer in time; try again",
                    self.server()
                ),
            )
        } else if e.is_decode() || e.is_body() {
            ClientError::other(format!(
                "unexpected answer from {}: {}",
                self.server(),
                chain(&e)
            ))
        } else {
            ClientError::new(
                FailureKind::Unreachable,
                format!("talking to jobq at {} failed: {}", self.server(), chain(&e)),
            )
        }
    }

    /// An error answer other than 401 and 404: the server's own message.
    pub fn refused(&self, status: StatusCode, server_text: Option<String>) -> ClientError {
        match server_text {
            Some(text) => ClientError::other(format!("{text} ({status})")),
            None => ClientError::other(format!(
                "unexpected answer {status} from {}: is it a jobq server?",
                self.server()
            )),
        }
    }

    fn not_jobq(&self, status: StatusCode) -> ClientError {
        ClientError::other(format!(
            "{} answered {status} for a jobq route: is it a jobq server? set --url or JOBQ_URL",
            self.server()
        ))
    }
}

/// The `error` of a jobq error answer, `None` when the body is not one.
pub async fn error_text(response: Response) -> Option<String> {
    let body: serde_json::Value = response.json().await.ok()?;
    body.get("error")?.as_str().map(str::to_owned)
}

/// An error with its causes, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(base: &str) -> Api {
        Api::new(Resolved {
            url: Url::parse(base).unwrap(),
            token: None,
        })
        .unwrap()
    }

    #[test]
    fn file_names_become_encoded_path_segments() {
        let api = api("http://127.0.0.1:8080");
        let url = api.url(["api", "v1", "jobs", "id", "results", "a b", "c?.txt"]);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8080/api/v1/jobs/id/results/a%20b/c%3F.txt"
        );
    }

    #[test]
    fn a_base_path_is_kept() {
        let api = api("https://example.com/jobq/");
        assert_eq!(
            api.url(["api", "v1", "jobs"]).as_str(),
            "https://example.com/jobq/api/v1/jobs"
        );
        assert_eq!(api.server(), "https://example.com/jobq");
    }
}
