//! Serde types for the `networking.istio.io` resources we read, field for field as the
//! istio/api protos define them. Every multi-word field also accepts its proto (snake_case)
//! name, because Istio's own jsonpb parser does. Fields Istio defines but we do not act on are
//! still typed here so that validation can name them; keys Istio does not define at all are
//! collected by the loader (through `serde_ignored`) and reported.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

pub type Labels = BTreeMap<String, String>;
/// A value we accept but do not model (yet): kept so validation can report it by name.
pub type Opaque = yaml_serde::Value;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ObjectMeta {
    pub name: String,
    pub namespace: Option<String>,
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
    /// Kubernetes bookkeeping (uid, resourceVersion, creationTimestamp, managedFields, ...):
    /// not configuration, never reported.
    #[serde(flatten)]
    pub other: BTreeMap<String, Opaque>,
}

// ---------------------------------------------------------------------------------------------
// Scalars Istio accepts in more than one spelling.

/// An integer that may also be written as a quoted string (jsonpb accepts both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Int(pub i64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Int;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
                Ok(Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
                i64::try_from(v)
                    .map(Int)
                    .map_err(|_| E::custom(format!("integer {v} is too large")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Int, E> {
                if v.fract() == 0.0 && v.abs() < 9.0e15 {
                    Ok(Int(v as i64))
                } else {
                    Err(E::custom(format!("expected an integer, found {v}")))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Int, E> {
                v.trim()
                    .parse::<i64>()
                    .map(Int)
                    .map_err(|_| E::custom(format!("expected an integer, found \"{v}\"")))
            }
        }
        d.deserialize_any(V)
    }
}

/// A double that may be written as an integer or a quoted string.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Double(pub f64);

impl<'de> Deserialize<'de> for Double {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Double;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Double, E> {
                Ok(Double(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Double, E> {
                Ok(Double(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Double, E> {
                Ok(Double(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Double, E> {
                v.trim()
                    .parse::<f64>()
                    .map(Double)
                    .map_err(|_| E::custom(format!("expected a number, found \"{v}\"")))
            }
        }
        d.deserialize_any(V)
    }
}

/// A boolean that may be written as a quoted string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bool(pub bool);

impl<'de> Deserialize<'de> for Bool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Bool;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true or false")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Bool, E> {
                Ok(Bool(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Bool, E> {
                match v {
                    "true" => Ok(Bool(true)),
                    "false" => Ok(Bool(false)),
                    _ => Err(E::custom(format!("expected true or false, found \"{v}\""))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Proto enums: jsonpb accepts the value name or its number.
macro_rules! istio_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $num:expr => $text:expr),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str(concat!("one of ", $($text, " "),+))
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$name, E> {
                        match v {
                            $($text => Ok($name::$variant),)+
                            _ => Err(E::custom(format!(
                                "unknown value \"{}\" (expected one of: {})", v,
                                [$($text),+].join(", ")))),
                        }
                    }
                    fn visit_i64<E: de::Error>(self, v: i64) -> Result<$name, E> {
                        match v {
                            $(n if n == $num => Ok($name::$variant),)+
                            _ => Err(E::custom(format!("unknown enum number {v}"))),
                        }
                    }
                    fn visit_u64<E: de::Error>(self, v: u64) -> Result<$name, E> {
                        self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

istio_enum!(Resolution {
    None = 0 => "NONE",
    Static = 1 => "STATIC",
    Dns = 2 => "DNS",
    DnsRoundRobin = 3 => "DNS_ROUND_ROBIN",
    DynamicDns = 4 => "DYNAMIC_DNS",
});

istio_enum!(Location {
    MeshExternal = 0 => "MESH_EXTERNAL",
    MeshInternal = 1 => "MESH_INTERNAL",
});

istio_enum!(SimpleLb {
    Unspecified = 0 => "UNSPECIFIED",
    LeastConn = 1 => "LEAST_CONN",
    Random = 2 => "RANDOM",
    Passthrough = 3 => "PASSTHROUGH",
    RoundRobin = 4 => "ROUND_ROBIN",
    LeastRequest = 5 => "LEAST_REQUEST",
});

istio_enum!(TlsMode {
    Disable = 0 => "DISABLE",
    Simple = 1 => "SIMPLE",
    Mutual = 2 => "MUTUAL",
    IstioMutual = 3 => "ISTIO_MUTUAL",
});

istio_enum!(RedirectPortSelection {
    FromProtocolDefault = 0 => "FROM_PROTOCOL_DEFAULT",
    FromRequestPort = 1 => "FROM_REQUEST_PORT",
});

istio_enum!(UnmatchedPreflights {
    Unspecified = 0 => "UNSPECIFIED",
    Forward = 1 => "FORWARD",
    Ignore = 2 => "IGNORE",
});

// ---------------------------------------------------------------------------------------------
// VirtualService

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct VirtualServiceSpec {
    pub hosts: Vec<String>,
    pub gateways: Vec<String>,
    pub http: Vec<HttpRoute>,
    pub tls: Vec<Opaque>,
    pub tcp: Vec<Opaque>,
    #[serde(alias = "export_to")]
    pub export_to: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpRoute {
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub matches: Vec<HttpMatchRequest>,
    pub route: Vec<HttpRouteDestination>,
    pub redirect: Option<HttpRedirect>,
    #[serde(alias = "direct_response")]
    pub direct_response: Option<HttpDirectResponse>,
    pub delegate: Option<Delegate>,
    pub rewrite: Option<HttpRewrite>,
    pub timeout: Option<String>,
    pub retries: Option<HttpRetry>,
    pub fault: Option<HttpFaultInjection>,
    pub mirror: Option<Destination>,
    pub mirrors: Vec<HttpMirrorPolicy>,
    #[serde(alias = "mirror_percent")]
    pub mirror_percent: Option<Int>,
    #[serde(alias = "mirror_percentage")]
    pub mirror_percentage: Option<Percent>,
    #[serde(alias = "cors_policy")]
    pub cors_policy: Option<CorsPolicy>,
    pub headers: Option<Headers>,
}

/// One `match` block. `name` and `statPrefix` only label it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpMatchRequest {
    pub name: Option<String>,
    pub uri: Option<StringMatch>,
    pub scheme: Option<StringMatch>,
    pub method: Option<StringMatch>,
    pub authority: Option<StringMatch>,
    pub headers: BTreeMap<String, StringMatch>,
    pub port: Option<Int>,
    #[serde(alias = "source_labels")]
    pub source_labels: Labels,
    pub gateways: Vec<String>,
    #[serde(alias = "query_params")]
    pub query_params: BTreeMap<String, StringMatch>,
    #[serde(alias = "ignore_uri_case")]
    pub ignore_uri_case: Option<Bool>,
    #[serde(alias = "without_headers")]
    pub without_headers: BTreeMap<String, StringMatch>,
    #[serde(alias = "source_namespace")]
    pub source_namespace: Option<String>,
    #[serde(alias = "stat_prefix")]
    pub stat_prefix: Option<String>,
}

/// Istio's StringMatch is a proto `oneof`; we keep all three so validation can report a block
/// that sets more than one.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(default)]
pub struct StringMatch {
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub regex: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpRouteDestination {
    pub destination: Destination,
    pub weight: Option<Int>,
    pub headers: Option<Headers>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Destination {
    pub host: String,
    pub subset: Option<String>,
    pub port: Option<PortSelector>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PortSelector {
    pub number: Option<Int>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpRedirect {
    pub uri: Option<String>,
    pub authority: Option<String>,
    pub port: Option<Int>,
    #[serde(alias = "derive_port")]
    pub derive_port: Option<RedirectPortSelection>,
    pub scheme: Option<String>,
    #[serde(alias = "redirect_code")]
    pub redirect_code: Option<Int>,
    #[serde(alias = "prefix_rewrite")]
    pub prefix_rewrite: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HttpDirectResponse {
    pub status: Option<Int>,
    pub body: Option<HttpBody>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HttpBody {
    pub string: Option<String>,
    pub bytes: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Delegate {
    pub name: String,
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpRewrite {
    pub uri: Option<String>,
    pub authority: Option<String>,
    #[serde(alias = "uri_regex_rewrite")]
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RegexRewrite {
    #[serde(rename = "match")]
    pub pattern: Option<String>,
    pub rewrite: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpRetry {
    pub attempts: Option<Int>,
    #[serde(alias = "per_try_timeout")]
    pub per_try_timeout: Option<String>,
    #[serde(alias = "retry_on")]
    pub retry_on: Option<String>,
    #[serde(alias = "retry_remote_localities")]
    pub retry_remote_localities: Option<Bool>,
    #[serde(alias = "retry_ignore_previous_hosts")]
    pub retry_ignore_previous_hosts: Option<Bool>,
    pub backoff: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HttpFaultInjection {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FaultDelay {
    #[serde(alias = "fixed_delay")]
    pub fixed_delay: Option<String>,
    #[serde(alias = "exponential_delay")]
    pub exponential_delay: Option<String>,
    pub percentage: Option<Percent>,
    pub percent: Option<Int>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FaultAbort {
    #[serde(alias = "http_status")]
    pub http_status: Option<Int>,
    #[serde(alias = "grpc_status")]
    pub grpc_status: Option<String>,
    #[serde(alias = "http2_error")]
    pub http2_error: Option<String>,
    pub percentage: Option<Percent>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default)]
pub struct Percent {
    pub value: Double,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HttpMirrorPolicy {
    pub destination: Destination,
    pub percentage: Option<Percent>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CorsPolicy {
    #[serde(alias = "allow_origin")]
    pub allow_origin: Vec<String>,
    #[serde(alias = "allow_origins")]
    pub allow_origins: Vec<StringMatch>,
    #[serde(alias = "allow_methods")]
    pub allow_methods: Vec<String>,
    #[serde(alias = "allow_headers")]
    pub allow_headers: Vec<String>,
    #[serde(alias = "expose_headers")]
    pub expose_headers: Vec<String>,
    #[serde(alias = "max_age")]
    pub max_age: Option<String>,
    #[serde(alias = "allow_credentials")]
    pub allow_credentials: Option<Bool>,
    #[serde(alias = "unmatched_preflights")]
    pub unmatched_preflights: Option<UnmatchedPreflights>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Headers {
    pub request: Option<HeaderOperations>,
    pub response: Option<HeaderOperations>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HeaderOperations {
    pub set: BTreeMap<String, String>,
    pub add: BTreeMap<String, String>,
    pub remove: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// DestinationRule

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DestinationRuleSpec {
    pub host: String,
    #[serde(alias = "traffic_policy")]
    pub traffic_policy: Option<TrafficPolicy>,
    pub subsets: Vec<Subset>,
    #[serde(alias = "export_to")]
    pub export_to: Vec<String>,
    #[serde(alias = "workload_selector")]
    pub workload_selector: Option<WorkloadSelector>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Subset {
    pub name: String,
    pub labels: Labels,
    #[serde(alias = "traffic_policy")]
    pub traffic_policy: Option<TrafficPolicy>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TrafficPolicy {
    #[serde(alias = "load_balancer")]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(alias = "connection_pool")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(alias = "outlier_detection")]
    pub outlier_detection: Option<OutlierDetection>,
    pub tls: Option<ClientTlsSettings>,
    #[serde(alias = "port_level_settings")]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    pub tunnel: Option<Opaque>,
    #[serde(alias = "proxy_protocol")]
    pub proxy_protocol: Option<Opaque>,
    #[serde(alias = "retry_budget")]
    pub retry_budget: Option<Opaque>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PortTrafficPolicy {
    pub port: Option<PortSelector>,
    #[serde(alias = "load_balancer")]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(alias = "connection_pool")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(alias = "outlier_detection")]
    pub outlier_detection: Option<OutlierDetection>,
    pub tls: Option<ClientTlsSettings>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LoadBalancerSettings {
    pub simple: Option<SimpleLb>,
    #[serde(alias = "consistent_hash")]
    pub consistent_hash: Option<ConsistentHashLb>,
    #[serde(alias = "locality_lb_setting")]
    pub locality_lb_setting: Option<Opaque>,
    #[serde(alias = "warmup_duration_secs")]
    pub warmup_duration_secs: Option<String>,
    pub warmup: Option<Opaque>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ConsistentHashLb {
    #[serde(alias = "http_header_name")]
    pub http_header_name: Option<String>,
    #[serde(alias = "http_cookie")]
    pub http_cookie: Option<HttpCookie>,
    #[serde(alias = "use_source_ip")]
    pub use_source_ip: Option<Bool>,
    #[serde(alias = "http_query_parameter_name")]
    pub http_query_parameter_name: Option<String>,
    #[serde(alias = "ring_hash")]
    pub ring_hash: Option<RingHash>,
    pub maglev: Option<Maglev>,
    #[serde(alias = "minimum_ring_size")]
    pub minimum_ring_size: Option<Int>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HttpCookie {
    pub name: String,
    pub path: Option<String>,
    pub ttl: Option<String>,
    pub attributes: Vec<Opaque>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RingHash {
    #[serde(alias = "minimum_ring_size")]
    pub minimum_ring_size: Option<Int>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Maglev {
    #[serde(alias = "table_size")]
    pub table_size: Option<Int>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ConnectionPoolSettings {
    pub tcp: Option<TcpSettings>,
    pub http: Option<HttpSettings>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TcpSettings {
    #[serde(alias = "max_connections")]
    pub max_connections: Option<Int>,
    #[serde(alias = "connect_timeout")]
    pub connect_timeout: Option<String>,
    #[serde(alias = "tcp_keepalive")]
    pub tcp_keepalive: Option<Opaque>,
    #[serde(alias = "max_connection_duration")]
    pub max_connection_duration: Option<String>,
    #[serde(alias = "idle_timeout")]
    pub idle_timeout: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpSettings {
    #[serde(alias = "http1_max_pending_requests")]
    pub http1_max_pending_requests: Option<Int>,
    #[serde(alias = "http2_max_requests")]
    pub http2_max_requests: Option<Int>,
    #[serde(alias = "max_requests_per_connection")]
    pub max_requests_per_connection: Option<Int>,
    #[serde(alias = "max_retries")]
    pub max_retries: Option<Int>,
    #[serde(alias = "idle_timeout")]
    pub idle_timeout: Option<String>,
    #[serde(alias = "h2_upgrade_policy")]
    pub h2_upgrade_policy: Option<Opaque>,
    #[serde(alias = "use_client_protocol")]
    pub use_client_protocol: Option<Bool>,
    #[serde(alias = "max_concurrent_streams")]
    pub max_concurrent_streams: Option<Int>,
    /// HTTP/2 PING keepalive on upstream connections (`time`, `interval`, `timeout`).
    #[serde(alias = "http2_keep_alive")]
    pub http2_keep_alive: Option<Opaque>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct OutlierDetection {
    #[serde(alias = "consecutive_errors")]
    pub consecutive_errors: Option<Int>,
    #[serde(alias = "consecutive_5xx_errors", rename = "consecutive5xxErrors")]
    pub consecutive_5xx_errors: Option<Int>,
    #[serde(alias = "consecutive_gateway_errors")]
    pub consecutive_gateway_errors: Option<Int>,
    #[serde(alias = "consecutive_local_origin_failures")]
    pub consecutive_local_origin_failures: Option<Int>,
    #[serde(alias = "split_external_local_origin_errors")]
    pub split_external_local_origin_errors: Option<Bool>,
    pub interval: Option<String>,
    #[serde(alias = "base_ejection_time")]
    pub base_ejection_time: Option<String>,
    #[serde(alias = "max_ejection_percent")]
    pub max_ejection_percent: Option<Int>,
    #[serde(alias = "min_health_percent")]
    pub min_health_percent: Option<Int>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ClientTlsSettings {
    pub mode: Option<TlsMode>,
    #[serde(alias = "client_certificate")]
    pub client_certificate: Option<String>,
    #[serde(alias = "private_key")]
    pub private_key: Option<String>,
    #[serde(alias = "ca_certificates")]
    pub ca_certificates: Option<String>,
    #[serde(alias = "credential_name")]
    pub credential_name: Option<String>,
    #[serde(alias = "subject_alt_names")]
    pub subject_alt_names: Vec<String>,
    pub sni: Option<String>,
    #[serde(alias = "insecure_skip_verify")]
    pub insecure_skip_verify: Option<Bool>,
    #[serde(alias = "ca_crl")]
    pub ca_crl: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct WorkloadSelector {
    pub labels: Labels,
}

// ---------------------------------------------------------------------------------------------
// ServiceEntry and WorkloadEntry

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ServiceEntrySpec {
    pub hosts: Vec<String>,
    pub addresses: Vec<String>,
    pub ports: Vec<ServicePort>,
    pub location: Option<Location>,
    pub resolution: Option<Resolution>,
    pub endpoints: Vec<WorkloadEntrySpec>,
    #[serde(alias = "workload_selector")]
    pub workload_selector: Option<WorkloadSelector>,
    #[serde(alias = "export_to")]
    pub export_to: Vec<String>,
    #[serde(alias = "subject_alt_names")]
    pub subject_alt_names: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ServicePort {
    pub number: Option<Int>,
    pub protocol: Option<String>,
    pub name: Option<String>,
    #[serde(alias = "target_port")]
    pub target_port: Option<Int>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WorkloadEntrySpec {
    pub address: Option<String>,
    pub ports: BTreeMap<String, Int>,
    pub labels: Labels,
    pub network: Option<String>,
    pub locality: Option<String>,
    pub weight: Option<Int>,
    #[serde(alias = "service_account")]
    pub service_account: Option<String>,
}
