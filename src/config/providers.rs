//! Validates the `[apps.<name>.apns]` and `[apps.<name>.fcm]` sections into
//! typed provider configs, reading their key files.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::{ApnsSection, ConnectionSection, FcmSection};
use super::load::Ctx;
use super::{
    secrets, ApnsAuth, ApnsConfig, ApnsEnvironment, ClientCert, ConnectionConfig, Endpoint,
    FcmConfig, Secret,
};

pub const APNS_PRODUCTION: &str = "https://api.push.apple.com";
pub const APNS_SANDBOX: &str = "https://api.sandbox.push.apple.com";
pub const FCM_ENDPOINT: &str = "https://fcm.googleapis.com";

/// Defaults and allowed ranges of the connection keys.
const CONNECTIONS: (u64, RangeInclusive<u64>) = (4, 1..=256);
const CONNECT_TIMEOUT_MS: (u64, RangeInclusive<u64>) = (5_000, 100..=120_000);
const REQUEST_TIMEOUT_MS: (u64, RangeInclusive<u64>) = (10_000, 100..=600_000);
const KEEPALIVE_INTERVAL_SECS: (u64, RangeInclusive<u64>) = (30, 1..=3_600);
const KEEPALIVE_TIMEOUT_SECS: (u64, RangeInclusive<u64>) = (10, 1..=300);
/// APNs JWT refresh: 40-50 minutes (Apple: not more often than every 20,
/// not less than every 60).
const TOKEN_REFRESH_SECS: (u64, RangeInclusive<u64>) = (2_700, 2_400..=3_000);

fn ranged(
    ctx: &mut Ctx,
    path: &str,
    v: Option<u64>,
    (default, range): (u64, RangeInclusive<u64>),
) -> u64 {
    match v {
        None => default,
        Some(v) if range.contains(&v) => v,
        Some(v) => {
            ctx.problem(
                path,
                format!(
                    "{v} is out of range; use {}..={} (default {default})",
                    range.start(),
                    range.end()
                ),
            );
            default
        }
    }
}

/// Reads a configured file, recording a problem naming the key on failure.
fn read_file(ctx: &mut Ctx, key: &str, path: &Path) -> Option<(PathBuf, Vec<u8>)> {
    let full = ctx.resolve(path);
    match secrets::read(&full) {
        Ok(bytes) => Some((full, bytes)),
        Err(e) => {
            let hint = if path.is_absolute() {
                String::new()
            } else {
                format!(
                    " (relative paths are resolved against {})",
                    ctx.base.display()
                )
            };
            ctx.problem(key, format!("{e}{hint}"));
            None
        }
    }
}

fn checked<T>(ctx: &mut Ctx, key: &str, file: &Path, r: Result<T, String>) -> Option<T> {
    r.map_err(|e| ctx.problem(key, format!("{}: {e}", file.display())))
        .ok()
}

pub(super) fn build_connection(
    prefix: &str,
    raw: ConnectionSection,
    default_endpoint: &str,
    ctx: &mut Ctx,
) -> Option<ConnectionConfig> {
    let key = |k: &str| format!("{prefix}.{k}");
    let endpoint = match Endpoint::parse(raw.endpoint.as_deref().unwrap_or(default_endpoint)) {
        Ok(e) => Some(e),
        Err(e) => {
            ctx.problem(&key("endpoint"), e);
            None
        }
    };
    let connections = ranged(ctx, &key("connections"), raw.connections, CONNECTIONS);
    let connect = ranged(
        ctx,
        &key("connect_timeout_ms"),
        raw.connect_timeout_ms,
        CONNECT_TIMEOUT_MS,
    );
    let request = ranged(
        ctx,
        &key("request_timeout_ms"),
        raw.request_timeout_ms,
        REQUEST_TIMEOUT_MS,
    );
    let ka_interval = ranged(
        ctx,
        &key("keepalive_interval_secs"),
        raw.keepalive_interval_secs,
        KEEPALIVE_INTERVAL_SECS,
    );
    let ka_timeout = ranged(
        ctx,
        &key("keepalive_timeout_secs"),
        raw.keepalive_timeout_secs,
        KEEPALIVE_TIMEOUT_SECS,
    );
    let mut extra_ca = Vec::new();
    if let Some(path) = raw.ca_file {
        let k = key("ca_file");
        if let Some((full, bytes)) = read_file(ctx, &k, &path) {
            extra_ca = checked(ctx, &k, &full, secrets::ca_certs(&bytes)).unwrap_or_default();
        }
    }
    Some(ConnectionConfig {
        endpoint: endpoint?,
        connections: usize::try_from(connections).unwrap_or(CONNECTIONS.0 as usize),
        connect_timeout: Duration::from_millis(connect),
        request_timeout: Duration::from_millis(request),
        keepalive_interval: Duration::from_secs(ka_interval),
        keepalive_timeout: Duration::from_secs(ka_timeout),
        extra_ca,
        client_cert: None,
    })
}

pub(super) fn build_apns(prefix: &str, raw: ApnsSection, ctx: &mut Ctx) -> Option<ApnsConfig> {
    let key = |k: &str| format!("{prefix}.{k}");
    let environment = match raw.environment.as_deref() {
        None | Some("production") => ApnsEnvironment::Production,
        Some("sandbox") => ApnsEnvironment::Sandbox,
        Some(other) => {
            ctx.problem(
                &key("environment"),
                format!("{other:?} is not an APNs environment; use \"production\" or \"sandbox\""),
            );
            ApnsEnvironment::Production
        }
    };
    let topic = match raw.topic.as_deref() {
        Some(t) if !t.is_empty() && !t.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            Some(t.to_owned())
        }
        Some(_) => {
            ctx.problem(
                &key("topic"),
                "must be the app's bundle id, e.g. \"com.example.shop\"",
            );
            None
        }
        None => {
            ctx.missing(
                &key("topic"),
                "set it to the app's bundle id, e.g. \"com.example.shop\"",
            );
            None
        }
    };
    let default_endpoint = match environment {
        ApnsEnvironment::Production => APNS_PRODUCTION,
        ApnsEnvironment::Sandbox => APNS_SANDBOX,
    };
    let auth = apns_auth(prefix, &raw, ctx);
    let mut connection = build_connection(prefix, raw.connection(), default_endpoint, ctx)?;
    let (auth, client_cert) = auth?;
    connection.client_cert = client_cert;
    Some(ApnsConfig {
        auth,
        topic: topic?,
        environment,
        connection,
    })
}

fn apns_auth(
    prefix: &str,
    raw: &ApnsSection,
    ctx: &mut Ctx,
) -> Option<(ApnsAuth, Option<ClientCert>)> {
    let token = raw.key_file.is_some() || raw.key_id.is_some() || raw.team_id.is_some();
    let cert = raw.cert_file.is_some() || raw.cert_key_file.is_some();
    match (token, cert) {
        (true, true) => {
            ctx.problem(
                prefix,
                "both token auth (key_file, key_id, team_id) and certificate auth (cert_file, cert_key_file) are set; keep one",
            );
            None
        }
        (false, false) => {
            ctx.problem(
                prefix,
                "no credentials; set key_file, key_id and team_id (token auth, recommended) or cert_file and cert_key_file",
            );
            None
        }
        (true, false) => token_auth(prefix, raw, ctx).map(|auth| (auth, None)),
        (false, true) => {
            cert_auth(prefix, raw, ctx).map(|cert| (ApnsAuth::Certificate, Some(cert)))
        }
    }
}

/// Reads and parses the file named by key `prefix.name`, or records why not.
fn key_file<T>(
    ctx: &mut Ctx,
    prefix: &str,
    name: &str,
    path: Option<&PathBuf>,
    if_missing: &str,
    parse: impl FnOnce(&[u8]) -> Result<T, String>,
) -> Option<T> {
    let k = format!("{prefix}.{name}");
    let Some(path) = path else {
        ctx.missing(&k, if_missing);
        return None;
    };
    let (full, bytes) = read_file(ctx, &k, path)?;
    checked(ctx, &k, &full, parse(&bytes))
}

fn token_auth(prefix: &str, raw: &ApnsSection, ctx: &mut Ctx) -> Option<ApnsAuth> {
    let key = |k: &str| format!("{prefix}.{k}");
    let team_id = apple_id(ctx, &key("team_id"), raw.team_id.as_deref(), "Team ID");
    let key_id = apple_id(ctx, &key("key_id"), raw.key_id.as_deref(), "Key ID");
    let refresh = ranged(
        ctx,
        &key("token_refresh_secs"),
        raw.token_refresh_secs,
        TOKEN_REFRESH_SECS,
    );
    let p8 = key_file(
        ctx,
        prefix,
        "key_file",
        raw.key_file.as_ref(),
        "set it to the .p8 key file downloaded from Apple",
        secrets::apns_p8,
    );
    Some(ApnsAuth::Token {
        team_id: team_id?,
        key_id: key_id?,
        key: Secret::new(p8?),
        refresh: Duration::from_secs(refresh),
    })
}

fn cert_auth(prefix: &str, raw: &ApnsSection, ctx: &mut Ctx) -> Option<ClientCert> {
    let chain = key_file(
        ctx,
        prefix,
        "cert_file",
        raw.cert_file.as_ref(),
        "set it to the PEM client certificate",
        secrets::cert_chain,
    );
    let pkey = key_file(
        ctx,
        prefix,
        "cert_key_file",
        raw.cert_key_file.as_ref(),
        "set it to the PEM private key of cert_file",
        secrets::private_key,
    );
    let (chain, pkey) = (chain?, pkey?);
    if let Err(e) = secrets::client_identity(&chain, &pkey) {
        ctx.problem(&format!("{prefix}.cert_key_file"), e);
        return None;
    }
    Some(ClientCert {
        chain,
        key: Secret::new(pkey),
    })
}

/// Apple Team and Key IDs: 10 characters, A-Z and 0-9.
fn apple_id(ctx: &mut Ctx, path: &str, v: Option<&str>, what: &str) -> Option<String> {
    match v {
        Some(id)
            if id.len() == 10
                && id
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) =>
        {
            Some(id.to_owned())
        }
        Some(id) => {
            ctx.problem(
                path,
                format!("{id:?} is not an Apple {what}: expected 10 characters of A-Z and 0-9 (see the Apple developer account)"),
            );
            None
        }
        None => {
            ctx.missing(path, &format!("set the 10-character Apple {what}"));
            None
        }
    }
}

pub(super) fn build_fcm(prefix: &str, raw: FcmSection, ctx: &mut Ctx) -> Option<FcmConfig> {
    let key = |k: &str| format!("{prefix}.{k}");
    let account = match &raw.service_account_file {
        Some(path) => {
            let k = key("service_account_file");
            read_file(ctx, &k, path).and_then(|(full, bytes)| {
                match secrets::service_account(&bytes) {
                    Ok(sa) => Some(sa),
                    Err(problems) => {
                        for p in problems {
                            ctx.problem(&k, format!("{}: {p}", full.display()));
                        }
                        None
                    }
                }
            })
        }
        None => {
            ctx.missing(
                &key("service_account_file"),
                "set it to the service account's JSON key file (Firebase console, Service accounts)",
            );
            None
        }
    };
    let project_id = match raw.project_id.as_deref() {
        Some(p) if valid_project_id(p) => Some(p.to_owned()),
        Some(p) => {
            ctx.problem(
                &key("project_id"),
                format!("{p:?} is not a Firebase project id (lower-case letters, digits and '-')"),
            );
            None
        }
        None => None,
    };
    let token_uri = raw.token_uri.clone();
    if let Some(uri) = &token_uri {
        if let Err(e) = https_url(uri) {
            ctx.problem(&key("token_uri"), e);
        }
    }
    let connection = build_connection(prefix, raw.connection(), FCM_ENDPOINT, ctx)?;
    let account = account?;
    Some(FcmConfig {
        project_id: project_id.unwrap_or_else(|| account.project_id.clone()),
        token_uri: token_uri.unwrap_or_else(|| account.token_uri.clone()),
        service_account: account,
        connection,
    })
}

fn valid_project_id(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 64
        && p.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b':' || b == b'.'
        })
}

/// Checks an `https://host[:port]/path` URL: its origin must be a valid [`Endpoint`].
pub fn https_url(url: &str) -> Result<Endpoint, String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("{url:?} must start with https://"))?;
    let origin_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{url:?} contains whitespace"));
    }
    Endpoint::parse(&format!("https://{}", &rest[..origin_len]))
}
