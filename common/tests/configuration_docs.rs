//! `.env.example` and the configuration table of `docs/deploy.md` document every key of
//! `Settings` exactly once, with its default, and name no key jobq does not have. The keys
//! come from the structure itself (`Settings::env_defaults`), so a new field without
//! documentation fails here.

use std::collections::BTreeMap;
use std::path::Path;

use jobq_common::settings::{REDACTED, Settings};
use serde_json::Value;

/// Variables jobq reads that are not fields of `Settings`.
const OTHER_VARIABLES: &[&str] = &["JOBQ_CONFIG_FILE"];

/// Variables of `.env.example` that share the prefix but only configure docker-compose.yml
/// (bind address, image names); jobq never reads them.
const COMPOSE_ONLY: &[&str] = &["JOBQ_BIND_ADDR", "JOBQ_IMAGE_PREFIX", "JOBQ_IMAGE_TAG"];

fn repo_file(name: &str) -> String {
    // Cargo sets the variable when it runs the test too: read then, it names this checkout
    // even when a shared target directory holds a binary built from another one.
    let crate_dir = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    let path = Path::new(&crate_dir).join("..").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every variable jobq reads, with its default (`None` for those outside `Settings`).
fn known_variables() -> BTreeMap<String, Option<Value>> {
    let mut known: BTreeMap<String, Option<Value>> = Settings::env_defaults()
        .into_iter()
        .map(|(name, default)| (name, Some(default)))
        .collect();
    for name in OTHER_VARIABLES {
        known.insert(name.to_string(), None);
    }
    known
}

/// `JOBQ_*` assignments in `.env.example`, active or commented out (`# JOBQ_X=value`):
/// (name, value, commented out).
fn env_example_assignments() -> Vec<(String, String, bool)> {
    repo_file(".env.example")
        .lines()
        .filter_map(|line| {
            let (line, commented) = match line.strip_prefix("# ") {
                Some(rest) => (rest, true),
                None => (line, false),
            };
            let (name, value) = line.split_once('=')?;
            let is_name = name.starts_with("JOBQ_")
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            is_name.then(|| (name.to_string(), value.to_string(), commented))
        })
        .collect()
}

/// Rows of the configuration table in `docs/deploy.md`: (key, default cell).
fn deploy_md_rows() -> Vec<(String, String)> {
    repo_file("docs/deploy.md")
        .lines()
        .filter(|line| line.starts_with("| `JOBQ_"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`').to_string(), cells[2].to_string())
        })
        .collect()
}

/// Whether `written` states `default`; an unset or empty default is written as nothing.
fn states_default(written: &str, default: &Value) -> bool {
    match default {
        Value::Null => written.is_empty(),
        Value::String(s) => written == s,
        Value::Number(n) => written.parse::<f64>().ok() == n.as_f64(),
        Value::Bool(b) => written == b.to_string(),
        _ => false,
    }
}

/// The default when `written` misstates it; secrets and variables outside `Settings` are
/// not checked.
fn wrong_default(written: &str, default: Option<Value>) -> Option<Value> {
    default
        .filter(|d| d.as_str() != Some(REDACTED))
        .filter(|d| !states_default(written, d))
}

#[test]
fn the_key_list_is_derived_from_every_section() {
    let keys: Vec<String> = Settings::env_defaults()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    for key in [
        "JOBQ_LOG_FORMAT",
        "JOBQ_KAFKA__BROKERS",
        "JOBQ_MONGO__URI",
        "JOBQ_S3__PART_SIZE_BYTES",
        "JOBQ_OIDC__LEEWAY_SECS",
        "JOBQ_FRONTEND__MAX_ARGS_BYTES",
        "JOBQ_WORKER__INSTANCE_ID",
        "JOBQ_METRICS__LISTEN",
        "JOBQ_OBSERVER__GROW_PARTITIONS",
        "JOBQ_STANDALONE__USERS",
    ] {
        assert!(
            keys.contains(&key.to_string()),
            "{key} missing from {keys:?}"
        );
    }
    let defaults: BTreeMap<_, _> = Settings::env_defaults().into_iter().collect();
    assert_eq!(defaults["JOBQ_S3__SECRET_KEY"], Value::from(REDACTED));
    assert_eq!(defaults["JOBQ_WORKER__INSTANCE_ID"], Value::Null);
}

#[test]
fn env_example_documents_every_key_once_and_commented_out_lines_show_the_default() {
    let assignments = env_example_assignments();
    let mut problems = Vec::new();
    for (name, default) in known_variables() {
        let lines: Vec<_> = assignments.iter().filter(|(n, _, _)| *n == name).collect();
        match lines.as_slice() {
            [] => problems.push(format!("{name} is not in .env.example")),
            [(_, value, true)] => {
                if let Some(default) = wrong_default(value, default) {
                    problems.push(format!(
                        "# {name}={value} in .env.example, but the default is {default}"
                    ));
                }
            }
            [(_, _, false)] => {}
            _ => problems.push(format!("{name} is in .env.example {} times", lines.len())),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn deploy_md_lists_every_key_once_with_its_default() {
    let rows = deploy_md_rows();
    let mut problems = Vec::new();
    for (name, default) in known_variables() {
        let cells: Vec<&String> = rows
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, c)| c)
            .collect();
        match cells.as_slice() {
            [] => problems.push(format!("{name} is not in the table of docs/deploy.md")),
            [cell] => {
                // The default is the cell's leading code span; text or nothing means unset.
                let written = cell
                    .strip_prefix('`')
                    .and_then(|rest| rest.split_once('`'))
                    .map_or("", |(code, _)| code);
                if let Some(default) = wrong_default(written, default) {
                    problems.push(format!(
                        "docs/deploy.md gives {name} the default {cell:?}, but it is {default}"
                    ));
                }
            }
            _ => problems.push(format!("{name} is in docs/deploy.md {} times", cells.len())),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn env_example_and_deploy_md_name_no_unknown_key() {
    let known = known_variables();
    let mut problems = Vec::new();
    for (name, _, _) in env_example_assignments() {
        if !known.contains_key(&name) && !COMPOSE_ONLY.contains(&name.as_str()) {
            problems.push(format!(
                ".env.example sets {name}, which jobq does not read"
            ));
        }
    }
    for (name, _) in deploy_md_rows() {
        if !known.contains_key(&name) {
            problems.push(format!(
                "docs/deploy.md lists {name}, which jobq does not read"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
