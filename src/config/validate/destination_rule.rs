//! DestinationRule: the webhook's schema checks for traffic policies, subsets, load
//! balancing, connection pools, outlier detection and client TLS, and the gaps (`SY0002`).

use super::*;

impl Out {
    pub(super) fn destination_rule_schema(&mut self, dr: &DestinationRule, applies: bool) {
        let spec = &dr.spec;
        if spec.host.is_empty() {
            self.schema(dr, "spec.host", "host is required");
        } else if spec.host.parse::<IpAddr>().is_err()
            && let Err(e) = validate_wildcard_domain(&spec.host)
        {
            self.schema(
                dr,
                "spec.host",
                format!("invalid host {:?}: {e}", spec.host),
            );
        }
        if let Some(tp) = &spec.traffic_policy {
            self.traffic_policy(dr, tp, "spec.trafficPolicy", applies);
        }
        let mut names = HashSet::new();
        for (k, subset) in spec.subsets.iter().enumerate() {
            let p = format!("spec.subsets[{k}]");
            if subset.name.is_empty() {
                self.schema(dr, format!("{p}.name"), "subset name cannot be empty");
            } else if !is_dns1123_label(&subset.name) {
                self.schema(
                    dr,
                    format!("{p}.name"),
                    format!("subset name is invalid: {} (must be a DNS-1123 label: letters, digits and '-', at most 63)", subset.name),
                );
            }
            if !names.insert(subset.name.as_str()) {
                self.schema(
                    dr,
                    format!("{p}.name"),
                    format!("duplicate subset names: {}", subset.name),
                );
            }
            if let Some(tp) = &subset.traffic_policy {
                self.traffic_policy(dr, tp, &format!("{p}.trafficPolicy"), applies);
            }
        }
        self.export_to(dr, &spec.export_to);
    }

    /// `gaps`: also report what is not implemented (only for rules that apply to this proxy).
    pub(super) fn traffic_policy(
        &mut self,
        dr: &DestinationRule,
        tp: &TrafficPolicy,
        p: &str,
        gaps: bool,
    ) {
        let empty = tp.load_balancer.is_none()
            && tp.connection_pool.is_none()
            && tp.outlier_detection.is_none()
            && tp.tls.is_none()
            && tp.port_level_settings.is_empty()
            && tp.tunnel.is_none()
            && tp.proxy_protocol.is_none()
            && tp.retry_budget.is_none();
        if empty {
            self.schema(dr, p, "traffic policy must have at least one field");
        }
        if let Some(lb) = &tp.load_balancer {
            self.load_balancer(dr, lb, &format!("{p}.loadBalancer"), gaps);
        }
        if let Some(cp) = &tp.connection_pool {
            self.connection_pool(dr, cp, &format!("{p}.connectionPool"), gaps);
        }
        if let Some(od) = &tp.outlier_detection {
            self.outlier_detection(dr, od, &format!("{p}.outlierDetection"), gaps);
        }
        if let Some(tls) = &tp.tls {
            self.client_tls(dr, tls, &format!("{p}.tls"), gaps);
        }
        for (k, pl) in tp.port_level_settings.iter().enumerate() {
            let pp = format!("{p}.portLevelSettings[{k}]");
            match pl.port.as_ref().and_then(|port| port.number) {
                None => self.schema(
                    dr,
                    format!("{pp}.port"),
                    "portTrafficPolicy must have valid port",
                ),
                Some(Int(n)) => self.port_number(dr, format!("{pp}.port.number"), n),
            }
            if pl.load_balancer.is_none()
                && pl.connection_pool.is_none()
                && pl.outlier_detection.is_none()
                && pl.tls.is_none()
            {
                self.schema(dr, &pp, "port traffic policy must have at least one field");
            }
            // The whole port-level block is reported as ignored below; only TLS is reported on its
            // own, because ignoring it is a security problem rather than a tuning one.
            if let Some(lb) = &pl.load_balancer {
                self.load_balancer(dr, lb, &format!("{pp}.loadBalancer"), false);
            }
            if let Some(cp) = &pl.connection_pool {
                self.connection_pool(dr, cp, &format!("{pp}.connectionPool"), false);
            }
            if let Some(od) = &pl.outlier_detection {
                self.outlier_detection(dr, od, &format!("{pp}.outlierDetection"), false);
            }
            if let Some(tls) = &pl.tls {
                self.client_tls(dr, tls, &format!("{pp}.tls"), gaps);
            }
        }
        if gaps {
            let blocks = [
                ("tunnel", tp.tunnel.is_some()),
                ("proxyProtocol", tp.proxy_protocol.is_some()),
                ("retryBudget", tp.retry_budget.is_some()),
            ];
            for (field, set) in blocks {
                if set {
                    self.gap(dr, field, format!("{p}.{field}"));
                }
            }
        }
    }

    pub(super) fn load_balancer(
        &mut self,
        dr: &DestinationRule,
        lb: &LoadBalancerSettings,
        p: &str,
        gaps: bool,
    ) {
        if lb.simple.is_some() && lb.consistent_hash.is_some() {
            self.schema(
                dr,
                p,
                "load balancer may contain only one of simple or consistentHash",
            );
        }
        if let Some(ch) = &lb.consistent_hash {
            let cp = format!("{p}.consistentHash");
            let keys = [
                ch.http_header_name.is_some(),
                ch.http_cookie.is_some(),
                ch.use_source_ip.is_some(),
                ch.http_query_parameter_name.is_some(),
            ];
            if keys.iter().filter(|k| **k).count() > 1 {
                self.schema(
                    dr,
                    &cp,
                    "consistentHash may contain only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName",
                );
            }
            if let Some(name) = ch.http_header_name.as_ref().filter(|n| !is_token(n)) {
                self.schema(
                    dr,
                    format!("{cp}.httpHeaderName"),
                    format!("header name {name:?} is not a valid HTTP header name"),
                );
            }
            if let Some(cookie) = &ch.http_cookie {
                if cookie.name.is_empty() {
                    self.schema(
                        dr,
                        format!("{cp}.httpCookie.name"),
                        "name required for HttpCookie",
                    );
                }
                if let Some(ttl) = &cookie.ttl {
                    self.duration(dr, format!("{cp}.httpCookie.ttl"), ttl, DurationRule::Any);
                }
            }
            if ch.ring_hash.is_some() && ch.maglev.is_some() {
                self.schema(
                    dr,
                    &cp,
                    "consistentHash may contain only one of ringHash or maglev",
                );
            }
            let table_size = ch
                .maglev
                .as_ref()
                .and_then(|m| m.table_size)
                .map_or(0, |s| s.0);
            if table_size != 0 && !(is_prime(table_size) && table_size < 5_000_011) {
                self.schema(
                    dr,
                    format!("{cp}.maglev.tableSize"),
                    format!(
                        "maglev table size {table_size} must be a prime number less than 5000011"
                    ),
                );
            }
            let ring = ch.ring_hash.as_ref().and_then(|r| r.minimum_ring_size);
            self.non_negative(
                dr,
                format!("{cp}.ringHash.minimumRingSize"),
                ring,
                "minimumRingSize",
            );
            if ch.minimum_ring_size.is_some() {
                self.non_negative(
                    dr,
                    format!("{cp}.minimumRingSize"),
                    ch.minimum_ring_size,
                    "minimumRingSize",
                );
                self.deprecated(
                    dr,
                    format!("{cp}.minimumRingSize"),
                    "consistentHash.minimumRingSize",
                    "\"consistentHash.ringHash.minimumRingSize\"",
                );
            }
            if gaps {}
        }
        if let Some(w) = &lb.warmup_duration_secs {
            self.duration(
                dr,
                format!("{p}.warmupDurationSecs"),
                w,
                DurationRule::AtLeast1ms,
            );
        }
        if gaps {
            let fields = [
                ("localityLbSetting", lb.locality_lb_setting.is_some()),
                ("warmup", lb.warmup.is_some()),
                ("warmupDurationSecs", lb.warmup_duration_secs.is_some()),
            ];
            for (field, set) in fields {
                if set {
                    self.gap(dr, &format!("loadBalancer.{field}"), format!("{p}.{field}"));
                }
            }
        }
    }

    pub(super) fn connection_pool(
        &mut self,
        dr: &DestinationRule,
        cp: &ConnectionPoolSettings,
        p: &str,
        gaps: bool,
    ) {
        if cp.tcp.is_none() && cp.http.is_none() {
            self.schema(dr, p, "connection pool must have at least one field");
        }
        if let Some(h) = &cp.http {
            let hp = format!("{p}.http");
            let ints = [
                ("http1MaxPendingRequests", h.http1_max_pending_requests),
                ("http2MaxRequests", h.http2_max_requests),
                ("maxRequestsPerConnection", h.max_requests_per_connection),
                ("maxRetries", h.max_retries),
                ("maxConcurrentStreams", h.max_concurrent_streams),
            ];
            for (field, v) in ints {
                self.non_negative(dr, format!("{hp}.{field}"), v, field);
            }
            if let Some(t) = &h.idle_timeout {
                self.duration(dr, format!("{hp}.idleTimeout"), t, DurationRule::AtLeast1ms);
            }
            let upgrade = match &h.h2_upgrade_policy {
                Some(Opaque::String(s)) => s == "UPGRADE",
                Some(Opaque::Number(n)) => n.as_i64() == Some(2),
                _ => false,
            };
            if upgrade && h.use_client_protocol == Some(Bool(true)) {
                self.schema(
                    dr,
                    &hp,
                    "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
                );
            }
        }
        if let Some(t) = &cp.tcp {
            let tp = format!("{p}.tcp");
            self.non_negative(
                dr,
                format!("{tp}.maxConnections"),
                t.max_connections,
                "maxConnections",
            );
            if let Some(d) = &t.connect_timeout {
                self.duration(
                    dr,
                    format!("{tp}.connectTimeout"),
                    d,
                    DurationRule::AtLeast1ms,
                );
            }
            if let Some(d) = &t.idle_timeout {
                self.duration(dr, format!("{tp}.idleTimeout"), d, DurationRule::ZeroOr1ms);
            }
            if let Some(d) = &t.max_connection_duration {
                self.duration(
                    dr,
                    format!("{tp}.maxConnectionDuration"),
                    d,
                    DurationRule::AtLeast1ms,
                );
            }
        }
        if gaps {
            // maxConnections, connectTimeout, http1MaxPendingRequests, http2MaxRequests,
            // maxRetries, maxRequestsPerConnection and http.idleTimeout are served; these tune
            // connections we do not manage that way yet.
            let http = cp.http.as_ref();
            let tcp = cp.tcp.as_ref();
            let unserved = [
                (
                    "connectionPool.http.h2UpgradePolicy",
                    http.is_some_and(|h| h.h2_upgrade_policy.is_some()),
                    "http.h2UpgradePolicy",
                ),
                (
                    "connectionPool.http.useClientProtocol",
                    http.is_some_and(|h| h.use_client_protocol.is_some()),
                    "http.useClientProtocol",
                ),
                (
                    "connectionPool.http.maxConcurrentStreams",
                    http.is_some_and(|h| h.max_concurrent_streams.is_some()),
                    "http.maxConcurrentStreams",
                ),
                (
                    "connectionPool.http.http2KeepAlive",
                    http.is_some_and(|h| h.http2_keep_alive.is_some()),
                    "http.http2KeepAlive",
                ),
                (
                    "connectionPool.tcp.tcpKeepalive",
                    tcp.is_some_and(|t| t.tcp_keepalive.is_some()),
                    "tcp.tcpKeepalive",
                ),
                (
                    "connectionPool.tcp.idleTimeout",
                    tcp.is_some_and(|t| t.idle_timeout.is_some()),
                    "tcp.idleTimeout",
                ),
                (
                    "connectionPool.tcp.maxConnectionDuration",
                    tcp.is_some_and(|t| t.max_connection_duration.is_some()),
                    "tcp.maxConnectionDuration",
                ),
            ];
            for (key, set, field) in unserved {
                if set {
                    self.gap(dr, key, format!("{p}.{field}"));
                }
            }
        }
    }

    pub(super) fn outlier_detection(
        &mut self,
        dr: &DestinationRule,
        od: &OutlierDetection,
        p: &str,
        gaps: bool,
    ) {
        if let Some(t) = &od.base_ejection_time {
            self.duration(
                dr,
                format!("{p}.baseEjectionTime"),
                t,
                DurationRule::AtLeast1ms,
            );
        }
        if let Some(t) = &od.interval {
            self.duration(dr, format!("{p}.interval"), t, DurationRule::AtLeast1ms);
        }
        let ints = [
            ("consecutiveErrors", od.consecutive_errors),
            ("consecutive5xxErrors", od.consecutive_5xx_errors),
            ("consecutiveGatewayErrors", od.consecutive_gateway_errors),
            (
                "consecutiveLocalOriginFailures",
                od.consecutive_local_origin_failures,
            ),
        ];
        for (field, v) in ints {
            self.non_negative(dr, format!("{p}.{field}"), v, field);
        }
        if od.consecutive_errors.is_some_and(|n| n.0 != 0) {
            self.deprecated(
                dr,
                format!("{p}.consecutiveErrors"),
                "outlierDetection.consecutiveErrors",
                "\"outlierDetection.consecutive5xxErrors\" or \"outlierDetection.consecutiveGatewayErrors\"",
            );
        }
        if od
            .consecutive_local_origin_failures
            .is_some_and(|n| n.0 > 0)
            && od.split_external_local_origin_errors != Some(Bool(true))
        {
            self.schema(
                dr,
                format!("{p}.consecutiveLocalOriginFailures"),
                "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false",
            );
        }
        self.percent_0_100(
            dr,
            format!("{p}.maxEjectionPercent"),
            od.max_ejection_percent,
        );
        self.percent_0_100(dr, format!("{p}.minHealthPercent"), od.min_health_percent);
        if gaps {
            let unserved = [
                (
                    "outlierDetection.consecutiveLocalOriginFailures",
                    od.consecutive_local_origin_failures.is_some(),
                    "consecutiveLocalOriginFailures",
                ),
                (
                    "outlierDetection.splitExternalLocalOriginErrors",
                    od.split_external_local_origin_errors.is_some_and(|b| b.0),
                    "splitExternalLocalOriginErrors",
                ),
            ];
            for (key, set, field) in unserved {
                if set {
                    self.gap(dr, key, format!("{p}.{field}"));
                }
            }
        }
    }

    pub(super) fn client_tls(
        &mut self,
        dr: &DestinationRule,
        tls: &ClientTlsSettings,
        p: &str,
        gaps: bool,
    ) {
        let mode = tls.mode.unwrap_or(TlsMode::Disable);
        let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
        if matches!(mode, TlsMode::Simple | TlsMode::Mutual) && set(&tls.credential_name) {
            if set(&tls.client_certificate) || set(&tls.ca_certificates) || set(&tls.private_key) {
                self.schema(
                    dr,
                    p,
                    "cannot specify client certificates or CA certificate If credentialName is set",
                );
            }
        } else if mode == TlsMode::Mutual {
            if !set(&tls.client_certificate) {
                self.schema(
                    dr,
                    format!("{p}.clientCertificate"),
                    "client certificate required for mutual tls",
                );
            }
            if !set(&tls.private_key) {
                self.schema(
                    dr,
                    format!("{p}.privateKey"),
                    "private key required for mutual tls",
                );
            }
        }
        if !gaps {
            return;
        }
        let key = match mode {
            TlsMode::Disable => return,
            TlsMode::Mutual
                if !set(&tls.credential_name)
                    && (!set(&tls.client_certificate) || !set(&tls.private_key)) =>
            {
                // Already reported above as the webhook does.
                return;
            }
            TlsMode::Simple | TlsMode::Mutual => {
                // The same build the table compiler does, so certificate files that cannot be
                // read or parsed refuse the config (and a reload keeps the last good table).
                if let Err(e) = crate::upstream::tls::TlsOrigin::build(tls, "", false) {
                    let code = match e.error {
                        crate::upstream::tls::TlsError::Read { .. } => {
                            codes::REFERENCED_RESOURCE_NOT_FOUND
                        }
                        crate::upstream::tls::TlsError::CredentialName => codes::NOT_IMPLEMENTED,
                        _ => codes::SCHEMA_VALIDATION_ERROR,
                    };
                    self.push(
                        dr,
                        Severity::Error,
                        code,
                        format!("{p}.{}", e.field),
                        e.error.to_string(),
                    );
                }
                return;
            }
            TlsMode::IstioMutual if self.istio_mutual_as_plaintext => {
                "tls.mode: ISTIO_MUTUAL as plaintext"
            }
            TlsMode::IstioMutual => "tls.mode: ISTIO_MUTUAL",
        };
        self.gap(dr, key, format!("{p}.mode"));
    }
}

pub(super) fn is_prime(n: i64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

// ---------------------------------------------------------------------------------------------
// ServiceEntry and WorkloadEntry: webhook
