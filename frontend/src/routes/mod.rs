//! The HTTP handlers, grouped by audience: login, health and load, the original job
//! routes, the resource routes, and operations (metrics, OpenAPI document).

pub mod auth;
pub mod health;
pub mod legacy;
pub mod ops;
pub mod v1;
