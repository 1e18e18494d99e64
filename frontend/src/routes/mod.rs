//! The HTTP handlers, grouped by audience: login, health and load, the original job
//! routes, the resource routes, operations (metrics, OpenAPI document), the live views
//! (Server-Sent Events, observations) and the dashboard's page.

pub mod auth;
pub mod dashboard;
pub mod health;
pub mod legacy;
pub mod ops;
pub mod streams;
pub mod v1;
