//! End-to-end tests: the real `legate` binary as separate control-plane and
//! proxy processes, real upstreams and clients, all on loopback.

mod support;

mod access_log;
mod admin;
mod api_key_auth;
mod circuit_breakers;
mod config_errors;
mod connection_limits;
mod control_plane_auth;
mod control_plane_metrics;
mod delta_xds;
mod demo;
mod endpoint_health;
mod ext_authz;
mod filter_chains;
mod grpc;
mod grpc_cases;
mod grpc_clients;
mod grpc_web;
mod grpc_web_browser;
mod hot_swap;
mod http2_abuse;
mod http2_pool;
mod http_framing;
mod independent_xds;
mod jwt_authn;
mod lifecycle;
mod listeners;
mod local_ratelimit;
mod metrics;
mod request_hardening;
mod restart;
mod retries;
mod rollout;
mod routing;
mod sds;
mod static_bootstrap;
mod timeouts;
mod tls;
mod upgrade;
mod websocket;
mod websocket_frames;
mod websocket_xds;
mod xds_nack;
mod xds_warming;
