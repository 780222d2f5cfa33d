//! Protocol-faithful APNs and FCM simulators over TLS and HTTP/2, for tests, the demo and load tests.
//!
//! Both serve real TLS (rustls + ring, ALPN `h2`, the dev certificate of
//! `config/dev/sim.pem`, trusted via `config/dev/ca.pem`) and HTTP/2 through
//! the `h2` crate. Start one with [`apns::start`] or [`fcm::start`] (bind
//! `127.0.0.1:0` in tests); each returns a [`SimHandle`] with the bound
//! address, live [`SimStats`] and [`SimHandle::shutdown`] (closes the
//! listener and every connection; the same port can then be bound again).
//!
//! # APNs simulator ([`apns`], protocols.md §4.1)
//! `POST /3/device/<hex token>`. Checks in this order: duplicate `apns-*` /
//! `authorization` headers (DuplicateHeaders), `apns-id` UUID (BadMessageId),
//! method (405 MethodNotAllowed), `apns-topic` present (MissingTopic; with a
//! client certificate its UID is the default), collapse id <= 64 bytes,
//! priority in {1,5,10}, `apns-expiration` integer, `apns-push-type` known,
//! `background` + priority 10 (BadPriority), topic = allowed bundle + the push
//! type's suffix (BadTopic for a wrong suffix, TopicDisallowed for another
//! bundle), path `/3/device/` (404 BadPath; empty token MissingDeviceToken),
//! token >= 64 hex chars (BadDeviceToken), the scripted pre-auth tokens below,
//! authentication, empty body (PayloadEmpty), size (413 above 4096 bytes,
//! 5120 for `voip`), then per-device rate, post-auth scripted tokens and
//! random faults. Answers: 200 with `apns-id` (echoed or generated) and, in
//! sandbox mode, `apns-unique-id`; errors with `apns-id`,
//! `content-type: application/json` and `{"reason":..}` (+ `"timestamp"` ms
//! for Unregistered/ExpiredToken).
//!
//! Authentication (token auth): `authorization: bearer <ES256 JWT>` verified
//! with ring against [`apns::TrustedKey`]s by `kid`; `iss` must be the key's
//! team. Missing header: MissingProviderToken; bad format/alg/signature,
//! unknown kid, other team than the key's or than the connection's first
//! team: InvalidProviderToken; another key than the connection's first:
//! UnrelatedKeyIdInToken; key restricted to the other environment:
//! BadEnvironmentKeyIdInToken; `iat` older than `max_token_age` (1 h):
//! ExpiredProviderToken; a different token sooner than `min_token_update`
//! (20 min) after the previous one: 429 TooManyProviderTokenUpdates. The
//! current token of a connection is only re-checked for age (cheap hot path).
//! With [`apns::ClientCerts`] on, a connection with a dev-CA client
//! certificate needs no JWT; its certificate UID is the allowed topic (no UID:
//! BadCertificate).
//!
//! Streams: every token-auth connection starts with
//! SETTINGS_MAX_CONCURRENT_STREAMS = 1; once a request passes authentication
//! a new SETTINGS frame raises it to `max_streams` (1000). A second
//! concurrent stream during the 1-stream phase gets RST_STREAM(REFUSED_STREAM).
//! Connections with a client certificate start at `max_streams`. Other
//! initial SETTINGS: header table 4096, initial window 65535, max frame
//! 16384, max header list 8000.
//!
//! Scripted APNs tokens (hex, at least 64 chars; [`apns::scripted_token`]
//! pads a prefix with zeros to 64):
//! | prefix | answer | when |
//! |---|---|---|
//! | `dead` | 410 Unregistered + `timestamp` (ms) | before auth |
//! | `bad0` | 400 BadDeviceToken | before auth |
//! | `70b1` | 400 DeviceTokenNotForTopic | before auth |
//! | `eeeeNN` | the reason `ApnsReason::KNOWN[NN]` (two decimal digits) with its status; see [`apns::forced_token`] | before auth |
//! | `4290` | 429 TooManyRequests | after auth |
//! | `5030` | 503 ServiceUnavailable, always | after auth |
//! | `5031` | 503 ServiceUnavailable on the first try of that exact token, 200 after | after auth |
//! | non-hex or < 64 chars | 400 BadDeviceToken | |
//! | anything else | 200 | |
//!
//! A forced `Shutdown` (index 31) also sends GOAWAY with `{"reason":"Shutdown"}`.
//!
//! Knobs ([`apns::ApnsSimOptions`]): `environment` (sandbox/production),
//! `trusted_keys`, `topics`, `max_streams`, `latency` ([`Latency`]),
//! `error_rate` (random 500 InternalServerError / 503 ServiceUnavailable),
//! `goaway_every` (after N requests on a connection: GOAWAY(NO_ERROR) with
//! debug `{"reason":"Shutdown"}`, in-flight streams finish, then close),
//! `device_rate` (requests per token per second above which 429
//! TooManyRequests), `client_certs`, `max_token_age`, `min_token_update`,
//! `accept_all` (benchmark mode: cached JWT check then 200 after `latency`,
//! nothing else; served by a lean HTTP/2 loop of its own, `fast.rs`, as the
//! load test shares its cores with the simulator),
//! `recent_requests`, `tls`.
//!
//! # FCM simulator ([`fcm`], protocols.md §4.2)
//! One listener serves both the OAuth2 token endpoint and the send API
//! (HTTP/2 only, max 100 concurrent streams).
//!
//! `POST /token` (form: `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<jwt>`):
//! the RS256 assertion is verified with ring against the dev service
//! account's public key by `kid`; `iss` must be the client email, `aud` the
//! token URL (`https://<host>/token`, or Google's
//! `https://oauth2.googleapis.com/token`), `exp - iat <= 3600`, `iat`/`exp`
//! within 5 min clock skew, `scope` containing `firebase.messaging` or
//! `cloud-platform`. Success: `{"access_token":..,"expires_in":N,"token_type":"Bearer"}`
//! with N = `token_lifetime` (3599 s). Errors: 400 `{"error":"invalid_grant",
//! "error_description":..}` (signature, audience, short-lived check),
//! `invalid_scope`, `unsupported_grant_type`, `invalid_request`.
//!
//! `POST /v1/projects/{p}/messages:send`: bearer issued by this simulator
//! and not expired, else 401 UNAUTHENTICATED (no FcmError); project other than
//! `project` 403 PERMISSION_DENIED; body JSON `{"message":{..},
//! "validate_only"?}`; exactly one of token/topic/condition; `data` values
//! strings; reserved data keys (`from`, `gcm`, `google*`, ...);
//! `android.ttl` Duration string `"<secs>[.frac]s"` in 0..=2419200;
//! `android.priority` normal/high (any case); payload size <= 4096 (2048 for
//! topics) else 400 INVALID_ARGUMENT. Project quota (`quota_per_minute`) ->
//! 429 QUOTA_EXCEEDED with Retry-After. Success: 200
//! `{"name":"projects/<p>/messages/<id>"}`; `validate_only` gives
//! `.../messages/fake_message_id`. Errors are google.rpc bodies
//! `{"error":{"code","message","status","details":[FcmError {errorCode}, ..]}}`.
//!
//! Scripted FCM tokens (prefix of `message.token`):
//! | prefix | answer |
//! |---|---|
//! | `unregistered` | 404 NOT_FOUND, UNREGISTERED |
//! | `mismatch` | 403 PERMISSION_DENIED, SENDER_ID_MISMATCH |
//! | `invalid` | 400 INVALID_ARGUMENT, INVALID_ARGUMENT + BadRequest fieldViolations on `message.token` |
//! | `quota` | 429 RESOURCE_EXHAUSTED, QUOTA_EXCEEDED, `retry-after: 60` |
//! | `unavailable` | 503 UNAVAILABLE, UNAVAILABLE, `retry-after: 1`, always |
//! | `flaky` | 503 UNAVAILABLE on the first try of that exact token, 200 after |
//! | `thirdparty` | 401 UNAUTHENTICATED, THIRD_PARTY_AUTH_ERROR |
//! | `error-<CODE>` | any `FcmErrorCode` by its wire name (e.g. `error-INTERNAL-x`, `error-UNREGISTERED_FID-x`) with its status; see [`fcm::forced_token`] |
//! | `http502` | 502 with an HTML body (Google front-end error page) |
//! | anything else | 200 |
//!
//! Knobs ([`fcm::FcmSimOptions`]): `project`, `latency`, `error_rate` (random
//! 500 INTERNAL / 503 UNAVAILABLE), `goaway_every` (GOAWAY NO_ERROR with debug
//! `max_age`), `token_lifetime`, `quota_per_minute`, `max_streams`,
//! `accept_all`, `recent_requests`, `tls`.
//!
//! [`SimStats`] counts requests, responses by status, connections, refused
//! streams, GOAWAYs, token grants, peak concurrent streams per connection,
//! and keeps the last `recent_requests` requests (headers + body + status).

pub mod apns;
pub mod dev;
pub mod fcm;
pub mod jwt;
pub mod knobs;
pub mod stats;
pub mod webpush;

mod fast;
mod frames;
mod server;

pub use knobs::Latency;
pub use server::SimHandle;
pub use stats::{ReceivedRequest, SimStats};
