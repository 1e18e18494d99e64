//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{auth, dashboard, health, legacy, ops, streams, v1};

/// The whole API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "jobq",
        description = "An elastic job queue: submit a git repository to run with `npm run start`, follow it, download its output."
    ),
    paths(
        auth::login_path,
        auth::login_form,
        health::health,
        health::health_alias,
        health::load,
        legacy::add_job,
        legacy::status_list,
        legacy::status_one,
        legacy::results,
        legacy::delete_job,
        v1::create,
        v1::list,
        v1::get,
        v1::cancel,
        v1::logs,
        v1::results,
        streams::events,
        streams::observations,
        dashboard::sign_in_config,
        dashboard::me,
        dashboard::policy,
        ops::metrics,
        ops::openapi,
    ),
    components(schemas(streams::StreamStart, streams::LogChunk, streams::LogEnd)),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "login"),
        (name = "health", description = "liveness and load"),
        (name = "jobs (original)", description = "the original design's routes, unchanged"),
        (name = "jobs", description = "resource routes"),
        (name = "live", description = "Server-Sent Events of job transitions, observations and the fleet policy, for dashboards"),
        (name = "operations", description = "metrics and this document"),
    )
)]
pub struct ApiDoc;

/// Declares the `bearer` security scheme the job routes name.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}
