//! VirtualService: the admission webhook's schema checks (`IST0106`), its warnings (`IST0133`)
//! and the fields switchyard reads but does not act on (`SY0002`).

use super::*;

impl Out {
    pub(super) fn virtual_service_schema(&mut self, vs: &VirtualService) {
        let spec = &vs.spec;
        let delegate = spec.hosts.is_empty();
        let mesh = binds_mesh(&spec.gateways);
        if delegate {
            if !spec.gateways.is_empty() {
                self.schema(
                    vs,
                    "spec.gateways",
                    "delegate virtual service must have no gateways specified",
                );
            }
            if !spec.tls.is_empty() {
                self.schema(
                    vs,
                    "spec.tls",
                    "delegate virtual service must have no tls route specified",
                );
            }
            if !spec.tcp.is_empty() {
                self.schema(
                    vs,
                    "spec.tcp",
                    "delegate virtual service must have no tcp route specified",
                );
            }
        }
        self.gateway_names(vs, &spec.gateways, "spec.gateways");
        self.vs_hosts(vs, mesh);
        if spec.http.is_empty() && spec.tcp.is_empty() && spec.tls.is_empty() {
            self.schema(
                vs,
                "spec",
                "http, tcp or tls must be provided in virtual service",
            );
        }
        for (i, rule) in spec.http.iter().enumerate() {
            self.http_route(vs, i, rule, delegate, mesh);
        }
        self.l4_routes(vs, "tcp", &spec.tcp);
        self.l4_routes(vs, "tls", &spec.tls);
        self.export_to(vs, &spec.export_to);
    }

    pub(super) fn vs_hosts(&mut self, vs: &VirtualService, mesh: bool) {
        let mut valid = true;
        for (i, host) in vs.spec.hosts.iter().enumerate() {
            let path = format!("spec.hosts[{i}]");
            if host.parse::<IpAddr>().is_ok() {
                continue;
            }
            if let Err(e) = validate_wildcard_domain(host) {
                self.schema(vs, path, format!("invalid host {host:?}: {e}"));
                valid = false;
            } else if mesh && host == "*" {
                self.schema(
                    vs,
                    path,
                    "wildcard host * is not allowed for virtual services bound to the mesh gateway",
                );
                valid = false;
            }
        }
        if !valid {
            return;
        }
        // Compared after short-name expansion: `reviews` and `reviews.default.svc.cluster.local`
        // in one VirtualService name the same virtual host.
        let resolved: Vec<String> = vs
            .spec
            .hosts
            .iter()
            .map(|h| resolve_short_name(h, &vs.namespace))
            .collect();
        for j in 1..resolved.len() {
            if let Some(i) = (0..j).find(|&i| hosts_overlap(&resolved[i], &resolved[j])) {
                self.schema(
                    vs,
                    format!("spec.hosts[{j}]"),
                    format!(
                        "duplicate hosts in virtual service: {} & {}",
                        vs.spec.hosts[i], vs.spec.hosts[j]
                    ),
                );
            }
        }
    }

    pub(super) fn http_route(
        &mut self,
        vs: &VirtualService,
        i: usize,
        rule: &HttpRoute,
        in_delegate: bool,
        mesh: bool,
    ) {
        let p = format!("spec.http[{i}]");
        let actions: Vec<&str> = [
            ("route", !rule.route.is_empty()),
            ("redirect", rule.redirect.is_some()),
            ("directResponse", rule.direct_response.is_some()),
            ("delegate", rule.delegate.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        match actions.as_slice() {
            [] => self.schema(vs, &p, "HTTP route, redirect, direct response or delegate is required"),
            [_] => {}
            many => self.schema(
                vs,
                &p,
                format!("HTTP route may contain only one of route, redirect, directResponse or delegate; found {}", many.join(" and ")),
            ),
        }
        if in_delegate && rule.delegate.is_some() {
            self.schema(
                vs,
                format!("{p}.delegate"),
                "delegate HTTP route cannot contain delegate",
            );
        }
        if rule.delegate.as_ref().is_some_and(|d| d.name.is_empty()) {
            self.schema(
                vs,
                format!("{p}.delegate.name"),
                "delegate name is required",
            );
        }
        for (action, set) in [
            ("redirect", rule.redirect.is_some()),
            ("direct response", rule.direct_response.is_some()),
        ] {
            if !set {
                continue;
            }
            if rule.fault.is_some() {
                self.schema(
                    vs,
                    format!("{p}.fault"),
                    format!("HTTP route cannot contain both fault and {action}"),
                );
            }
            if rule.rewrite.is_some() {
                self.schema(
                    vs,
                    format!("{p}.rewrite"),
                    format!("HTTP route rule cannot contain both rewrite and {action}"),
                );
            }
        }
        if rule.mirror.is_some() && !rule.mirrors.is_empty() {
            self.schema(
                vs,
                format!("{p}.mirrors"),
                "HTTP route cannot contain both mirror and mirrors",
            );
        }

        // Delegation merges matches by comparing them, which Istio cannot do for regexes.
        let regex_allowed = !in_delegate && rule.delegate.is_none();
        for (j, m) in rule.matches.iter().enumerate() {
            self.http_match(vs, &format!("{p}.match[{j}]"), m, regex_allowed, mesh);
        }
        if let Some(h) = &rule.headers {
            self.header_ops(vs, &format!("{p}.headers"), h);
        }
        self.authority_rewrite_once(vs, &p, rule);
        self.route_destinations(vs, &p, rule);
        if let Some(r) = &rule.redirect {
            self.redirect(vs, &format!("{p}.redirect"), r, &rule.matches);
        }
        if let Some(d) = &rule.direct_response {
            self.direct_response(vs, &format!("{p}.directResponse"), d);
        }
        if let Some(rw) = &rule.rewrite {
            self.rewrite(vs, &format!("{p}.rewrite"), rw);
        }
        if let Some(t) = &rule.timeout {
            self.duration(vs, format!("{p}.timeout"), t, DurationRule::Timeout);
        }
        if let Some(r) = &rule.retries {
            self.retries(vs, &format!("{p}.retries"), r);
        }
        if let Some(f) = &rule.fault {
            self.fault(vs, &format!("{p}.fault"), f);
        }
        if let Some(m) = &rule.mirror {
            self.destination(vs, &format!("{p}.mirror"), m);
        }
        if let Some(Int(n)) = rule.mirror_percent {
            if !(0..=100).contains(&n) {
                self.schema(
                    vs,
                    format!("{p}.mirrorPercent"),
                    format!("mirror_percent must be in range 0..100 (it has {n})"),
                );
            }
            self.deprecated(
                vs,
                format!("{p}.mirrorPercent"),
                "mirrorPercent",
                "\"mirrorPercentage\"",
            );
        }
        if let Some(pct) = &rule.mirror_percentage {
            self.mirror_percentage(vs, format!("{p}.mirrorPercentage"), pct);
        }
        for (j, m) in rule.mirrors.iter().enumerate() {
            let mp = format!("{p}.mirrors[{j}]");
            if m.destination.host.is_empty() {
                self.schema(
                    vs,
                    format!("{mp}.destination"),
                    "destination is required for mirrors",
                );
            } else {
                self.destination(vs, &format!("{mp}.destination"), &m.destination);
            }
            if let Some(pct) = &m.percentage {
                self.mirror_percentage(vs, format!("{mp}.percentage"), pct);
            }
        }
        if let Some(c) = &rule.cors_policy {
            self.cors(vs, &format!("{p}.corsPolicy"), c);
        }
    }

    pub(super) fn mirror_percentage(&mut self, vs: &VirtualService, path: String, p: &Percent) {
        let v = p.value.0;
        if v.is_nan() || !(0.0..=100.0).contains(&v) {
            self.schema(
                vs,
                path,
                format!("mirror percentage must be in range 0..100 (it has {v})"),
            );
        }
    }

    pub(super) fn http_match(
        &mut self,
        vs: &VirtualService,
        p: &str,
        m: &HttpMatchRequest,
        regex_allowed: bool,
        mesh: bool,
    ) {
        for (name, sm) in &m.headers {
            let hp = format!("{p}.headers.{name}");
            if let Some(e) = match_header_name_problem(name) {
                self.schema(vs, &hp, e);
            }
            if mesh && name.starts_with(JWT_CLAIM_PREFIX) {
                self.schema(
                    vs,
                    &hp,
                    format!("JWT claim based routing (key: {name}) is only supported for gateway, found no gateways: [{}]", vs.spec.gateways.join(" ")),
                );
            }
            self.string_match(vs, &hp, sm, MatchKind::Header, regex_allowed);
        }
        for (name, sm) in &m.without_headers {
            let hp = format!("{p}.withoutHeaders.{name}");
            if let Some(e) = match_header_name_problem(name) {
                self.schema(vs, &hp, e);
            }
            self.string_match(vs, &hp, sm, MatchKind::WithoutHeader, regex_allowed);
        }
        if let Some(sm) = &m.uri {
            self.string_match(vs, &format!("{p}.uri"), sm, MatchKind::Uri, regex_allowed);
        }
        for (field, sm) in [
            ("scheme", &m.scheme),
            ("method", &m.method),
            ("authority", &m.authority),
        ] {
            if let Some(sm) = sm {
                self.string_match(
                    vs,
                    &format!("{p}.{field}"),
                    sm,
                    MatchKind::Pseudo,
                    regex_allowed,
                );
            }
        }
        for (name, sm) in &m.query_params {
            self.string_match(
                vs,
                &format!("{p}.queryParams.{name}"),
                sm,
                MatchKind::Query,
                regex_allowed,
            );
        }
        if let Some(port) = m.port.map(|p| p.0).filter(|p| *p != 0) {
            self.port_number(vs, format!("{p}.port"), port);
        }
        if let Some(ns) = m
            .source_namespace
            .as_deref()
            .filter(|ns| !ns.is_empty() && !is_dns1123_label(ns))
        {
            self.schema(
                vs,
                format!("{p}.sourceNamespace"),
                format!("sourceNamespace match {ns} is invalid"),
            );
        }
        self.gateway_names(vs, &m.gateways, &format!("{p}.gateways"));
    }

    pub(super) fn string_match(
        &mut self,
        vs: &VirtualService,
        p: &str,
        sm: &StringMatch,
        kind: MatchKind,
        regex_allowed: bool,
    ) {
        let set: Vec<&str> = [
            ("exact", sm.exact.is_some()),
            ("prefix", sm.prefix.is_some()),
            ("regex", sm.regex.is_some()),
        ]
        .into_iter()
        .filter_map(|(n, s)| s.then_some(n))
        .collect();
        if set.len() > 1 {
            self.schema(
                vs,
                p,
                format!(
                    "only one of exact, prefix or regex may be set; found {}",
                    set.join(" and ")
                ),
            );
            return;
        }
        if sm.prefix.as_deref() == Some("")
            && matches!(
                kind,
                MatchKind::Header | MatchKind::Pseudo | MatchKind::Query
            )
        {
            self.schema(
                vs,
                format!("{p}.prefix"),
                "prefix string match should not be empty",
            );
        }
        let Some(re) = &sm.regex else {
            return;
        };
        let rp = format!("{p}.regex");
        if !regex_allowed {
            self.schema(
                vs,
                rp,
                "regex match is not supported in a delegate or a route that delegates",
            );
            return;
        }
        if re.is_empty() {
            self.schema(vs, rp, "regex string match should not be empty");
            return;
        }
        // `regex: "*"` is Istio's presence check for headers and query parameters, not an RE2.
        if re == "*"
            && matches!(
                kind,
                MatchKind::Header | MatchKind::WithoutHeader | MatchKind::Query
            )
        {
            return;
        }
        if let Err(e) = regex_problem(re) {
            self.schema(vs, rp, e);
        }
    }

    pub(super) fn route_destinations(&mut self, vs: &VirtualService, p: &str, rule: &HttpRoute) {
        let mut total: i64 = 0;
        for (j, rd) in rule.route.iter().enumerate() {
            let dp = format!("{p}.route[{j}]");
            if let Some(h) = &rd.headers {
                self.header_ops(vs, &format!("{dp}.headers"), h);
            }
            self.destination(vs, &format!("{dp}.destination"), &rd.destination);
            if let Some(Int(w)) = rd.weight {
                if w < 0 {
                    self.schema(vs, format!("{dp}.weight"), format!("weight {w} < 0"));
                } else if w > i64::from(i32::MAX) {
                    self.schema(
                        vs,
                        format!("{dp}.weight"),
                        format!("weight {w} is too large (at most {})", i32::MAX),
                    );
                } else {
                    total = total.saturating_add(w);
                }
            }
        }
        if rule.route.len() > 1 && total == 0 {
            self.schema(vs, format!("{p}.route"), "total destination weight = 0");
        }
    }

    pub(super) fn destination(&mut self, vs: &VirtualService, p: &str, d: &Destination) {
        if d.host.is_empty() {
            self.schema(vs, format!("{p}.host"), "destination host is required");
        } else if d.host == "*" {
            self.schema(vs, format!("{p}.host"), "invalid destination host *");
        } else if let Err(e) = validate_wildcard_domain(&d.host) {
            self.schema(
                vs,
                format!("{p}.host"),
                format!("invalid destination host {:?}: {e}", d.host),
            );
        }
        if let Some(s) = d
            .subset
            .as_deref()
            .filter(|s| !s.is_empty() && !is_dns1123_label(s))
        {
            self.schema(
                vs,
                format!("{p}.subset"),
                format!("subset name is invalid: {s} (must be a DNS-1123 label: letters, digits and '-', at most 63)"),
            );
        }
        if let Some(port) = &d.port {
            self.port_number(
                vs,
                format!("{p}.port.number"),
                port.number.map_or(0, |n| n.0),
            );
        }
    }

    pub(super) fn redirect(
        &mut self,
        vs: &VirtualService,
        p: &str,
        r: &HttpRedirect,
        matches: &[HttpMatchRequest],
    ) {
        let uri = r.uri.as_deref().filter(|u| !u.is_empty());
        let changes = uri.is_some()
            || r.prefix_rewrite.is_some()
            || r.authority.as_deref().is_some_and(|a| !a.is_empty())
            || r.scheme.as_deref().is_some_and(|s| !s.is_empty())
            || r.port.is_some_and(|p| p.0 != 0)
            || r.derive_port.is_some();
        if !changes {
            self.schema(
                vs,
                p,
                "redirect must specify URI, prefixRewrite, authority, scheme, or port",
            );
        }
        if uri.is_some() && r.prefix_rewrite.is_some() {
            self.schema(
                vs,
                format!("{p}.prefixRewrite"),
                "redirect may contain only one of uri or prefixRewrite",
            );
        }
        if r.prefix_rewrite.is_some()
            && (matches.is_empty()
                || matches
                    .iter()
                    .any(|m| m.uri.as_ref().is_none_or(|u| u.prefix.is_none())))
        {
            self.schema(
                vs,
                format!("{p}.prefixRewrite"),
                "prefixRewrite requires every match of the rule to be a uri prefix match",
            );
        }
        if let Some(code) = r.redirect_code.map(|c| c.0).filter(|c| *c != 0) {
            if !(300..=399).contains(&code) {
                self.schema(
                    vs,
                    format!("{p}.redirectCode"),
                    format!("{code} is not a valid redirect code, must be 3xx"),
                );
            } else if ![301, 302, 303, 307, 308].contains(&code) {
                self.schema_warning(
                    vs,
                    format!("{p}.redirectCode"),
                    format!("redirect code {code} is not one of 301, 302, 303, 307, 308; Istio drops the redirect for it"),
                );
            }
        }
        if r.scheme
            .as_deref()
            .is_some_and(|s| !matches!(s, "" | "http" | "https"))
        {
            self.schema(
                vs,
                format!("{p}.scheme"),
                "invalid redirect scheme, must be \"http\" or \"https\"",
            );
        }
        if let Some(Int(port)) = r.port {
            if port != 0 {
                self.port_number(vs, format!("{p}.port"), port);
            }
            if r.derive_port.is_some() {
                self.schema(
                    vs,
                    format!("{p}.derivePort"),
                    "redirect may contain only one of port or derivePort",
                );
            }
        }
    }

    pub(super) fn direct_response(
        &mut self,
        vs: &VirtualService,
        p: &str,
        d: &crate::config::istio::HttpDirectResponse,
    ) {
        let status = d.status.map_or(0, |s| s.0);
        if !(200..=599).contains(&status) {
            self.schema(
                vs,
                format!("{p}.status"),
                format!("HTTP status {status} is not in range 200-599"),
            );
        }
        let Some(body) = &d.body else {
            return;
        };
        let size = match (&body.string, &body.bytes) {
            (Some(_), Some(_)) => {
                self.schema(
                    vs,
                    format!("{p}.body"),
                    "body may contain only one of string or bytes",
                );
                return;
            }
            (Some(s), None) => s.len(),
            (None, Some(b)) => match base64_decoded_len(b) {
                Some(n) => n,
                None => {
                    self.schema(
                        vs,
                        format!("{p}.body.bytes"),
                        "body.bytes is not valid base64",
                    );
                    return;
                }
            },
            (None, None) => 0,
        };
        if size > MB {
            self.schema(
                vs,
                format!("{p}.body"),
                "large direct_responses may impact control plane performance, must be less than 1MB",
            );
        } else if size > 100 * KB {
            self.schema_warning(
                vs,
                format!("{p}.body"),
                "large direct_responses may impact control plane performance",
            );
        }
    }

    pub(super) fn rewrite(
        &mut self,
        vs: &VirtualService,
        p: &str,
        rw: &crate::config::istio::HttpRewrite,
    ) {
        let uri = rw.uri.as_deref().is_some_and(|u| !u.is_empty());
        let authority = rw.authority.as_deref().is_some_and(|a| !a.is_empty());
        if uri && rw.uri_regex_rewrite.is_some() {
            self.schema(
                vs,
                p,
                "rewrite may only contain one of URI or UriRegexRewrite",
            );
        }
        if !uri && !authority && rw.uri_regex_rewrite.is_none() {
            self.schema(
                vs,
                p,
                "rewrite must specify at least one of URI, UriRegexRewrite, or authority",
            );
        }
        if let Some(rr) = &rw.uri_regex_rewrite {
            let rp = format!("{p}.uriRegexRewrite");
            match (
                rr.pattern.as_deref().filter(|s| !s.is_empty()),
                rr.rewrite.as_deref().filter(|s| !s.is_empty()),
            ) {
                (Some(pattern), Some(_)) => {
                    if let Err(e) = regex_problem(pattern) {
                        self.schema(vs, format!("{rp}.match"), e);
                    }
                }
                _ => self.schema(
                    vs,
                    rp,
                    "UriRegexRewrite requires both Rewrite and Match fields to be specified",
                ),
            }
        }
    }

    /// Istio's `validateAuthorityRewrite`: `rewrite.authority`, and a Host or `:authority` key in
    /// `headers.request.set`/`add`, all become one host rewrite, so only one may be given.
    pub(super) fn authority_rewrite_once(
        &mut self,
        vs: &VirtualService,
        p: &str,
        rule: &HttpRoute,
    ) {
        let mut current = rule
            .rewrite
            .as_ref()
            .and_then(|r| r.authority.clone())
            .filter(|a| !a.is_empty());
        let Some(req) = rule.headers.as_ref().and_then(|h| h.request.as_ref()) else {
            return;
        };
        for (op, map) in [("set", &req.set), ("add", &req.add)] {
            for (k, v) in map {
                if !is_authority_header(k) {
                    continue;
                }
                if let Some(c) = &current {
                    self.schema(
                        vs,
                        format!("{p}.headers.request.{op}.{k}"),
                        format!("authority header cannot be set multiple times: have {c:?}, attempting to set {v:?}"),
                    );
                    return;
                }
                current = Some(v.clone());
            }
        }
    }

    pub(super) fn header_ops(&mut self, vs: &VirtualService, p: &str, h: &Headers) {
        for (dir, ops) in [("request", &h.request), ("response", &h.response)] {
            let Some(ops) = ops else {
                continue;
            };
            let request = dir == "request";
            for (op, map) in [("set", &ops.set), ("add", &ops.add)] {
                for (name, value) in map {
                    let path = format!("{p}.{dir}.{op}.{name}");
                    if let Some(e) = header_op_name_problem(name, request) {
                        self.schema(vs, &path, e);
                    }
                    if let Some(e) = header_value_problem(value) {
                        self.schema(vs, &path, e);
                    }
                }
            }
            for (k, name) in ops.remove.iter().enumerate() {
                if let Some(e) = header_op_name_problem(name, false) {
                    self.schema(vs, format!("{p}.{dir}.remove[{k}]"), e);
                }
            }
        }
    }

    pub(super) fn retries(&mut self, vs: &VirtualService, p: &str, r: &HttpRetry) {
        let attempts = r.attempts.map_or(0, |a| a.0);
        if attempts < 0 {
            self.schema(vs, format!("{p}.attempts"), "attempts cannot be negative");
        }
        let retry_on = r.retry_on.as_deref().unwrap_or("");
        if attempts == 0
            && (r.per_try_timeout.is_some()
                || !retry_on.is_empty()
                || r.retry_remote_localities.is_some())
        {
            self.schema(
                vs,
                p,
                "http retry policy configured when attempts are set to 0 (disabled)",
            );
        }
        if let Some(t) = &r.per_try_timeout {
            self.duration(vs, format!("{p}.perTryTimeout"), t, DurationRule::Timeout);
        }
        if let Some(b) = &r.backoff {
            self.duration(vs, format!("{p}.backoff"), b, DurationRule::AtLeast1ms);
        }
        if !retry_on.is_empty() {
            // Istio splits on commas without trimming, so "5xx, reset" is refused, as here.
            for policy in retry_on.split(',') {
                let is_status = policy.parse::<u16>().is_ok_and(is_known_http_status);
                if !is_status && !RETRY_ON_POLICIES.contains(&policy) {
                    self.schema(
                        vs,
                        format!("{p}.retryOn"),
                        format!("{policy:?} is not a valid retryOn policy"),
                    );
                }
            }
        }
    }

    pub(super) fn fault(&mut self, vs: &VirtualService, p: &str, f: &HttpFaultInjection) {
        if f.abort.is_none() && f.delay.is_none() {
            self.schema(
                vs,
                p,
                "HTTP fault injection must have an abort and/or a delay",
            );
        }
        if let Some(a) = &f.abort {
            let ap = format!("{p}.abort");
            if let Some(pct) = &a.percentage {
                self.percentage(vs, format!("{ap}.percentage"), pct);
            }
            let kinds = [
                a.http_status.is_some(),
                a.grpc_status.is_some(),
                a.http2_error.is_some(),
            ];
            if kinds.iter().filter(|k| **k).count() > 1 {
                self.schema(
                    vs,
                    &ap,
                    "abort may contain only one of httpStatus, grpcStatus or http2Error",
                );
            } else if let Some(Int(s)) = a.http_status {
                if !(200..=599).contains(&s) {
                    self.schema(
                        vs,
                        format!("{ap}.httpStatus"),
                        format!("HTTP status {s} is not in range 200-599"),
                    );
                }
            } else if let Some(g) = &a.grpc_status {
                if !crate::route::policy::GRPC_STATUS_NAMES.contains(&g.as_str()) {
                    self.schema(
                        vs,
                        format!("{ap}.grpcStatus"),
                        format!("gRPC status {g:?} is not supported. See https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of supported codes, for example 'NOT_FOUND'"),
                    );
                }
            } else if a.http2_error.is_some() {
                self.schema(
                    vs,
                    format!("{ap}.http2Error"),
                    "HTTP/2 abort fault injection not supported yet",
                );
            } else {
                self.schema_warning(vs, &ap, "abort configured, but error type not set");
            }
        }
        if let Some(d) = &f.delay {
            let dp = format!("{p}.delay");
            if let Some(pct) = &d.percentage {
                self.percentage(vs, format!("{dp}.percentage"), pct);
            }
            if let Some(t) = &d.fixed_delay {
                self.duration(vs, format!("{dp}.fixedDelay"), t, DurationRule::AtLeast1ms);
            }
            if let Some(t) = &d.exponential_delay {
                self.duration(
                    vs,
                    format!("{dp}.exponentialDelay"),
                    t,
                    DurationRule::AtLeast1ms,
                );
                self.schema(
                    vs,
                    format!("{dp}.exponentialDelay"),
                    "exponentialDelay not supported yet",
                );
            }
            if d.percent.is_some() {
                self.percent_0_100(vs, format!("{dp}.percent"), d.percent);
                self.deprecated(
                    vs,
                    format!("{dp}.percent"),
                    "fault.delay.percent",
                    "\"fault.delay.percentage\"",
                );
            }
        }
    }

    pub(super) fn cors(&mut self, vs: &VirtualService, p: &str, c: &CorsPolicy) {
        for (k, origin) in c.allow_origins.iter().enumerate() {
            let op = format!("{p}.allowOrigins[{k}]");
            let value = origin
                .exact
                .as_deref()
                .or(origin.prefix.as_deref())
                .or(origin.regex.as_deref());
            if value.is_none_or(str::is_empty) {
                self.schema(
                    vs,
                    &op,
                    "'' is not a valid match type for CORS allow origins",
                );
                continue;
            }
            self.string_match(vs, &op, origin, MatchKind::Uri, true);
        }
        if !c.allow_origin.is_empty() {
            self.deprecated(
                vs,
                format!("{p}.allowOrigin"),
                "corsPolicy.allowOrigin",
                "\"corsPolicy.allowOrigins\"",
            );
        }
        for (k, m) in c.allow_methods.iter().enumerate() {
            if !CORS_METHODS.contains(&m.as_str()) {
                self.schema(
                    vs,
                    format!("{p}.allowMethods[{k}]"),
                    format!("{m:?} is not a supported HTTP method"),
                );
            }
        }
        for (field, names) in [
            ("allowHeaders", &c.allow_headers),
            ("exposeHeaders", &c.expose_headers),
        ] {
            for (k, name) in names.iter().enumerate() {
                if name != "*" && !is_token(name) {
                    self.schema(
                        vs,
                        format!("{p}.{field}[{k}]"),
                        format!("header name {name:?} is not a valid HTTP header name"),
                    );
                }
            }
        }
        if let Some(age) = &c.max_age {
            self.duration(vs, format!("{p}.maxAge"), age, DurationRule::WholeSeconds);
        }
    }

    /// TCP and TLS routes are kept as raw YAML (not served here); only what the webhook requires
    /// of every route is checked.
    pub(super) fn l4_routes(&mut self, vs: &VirtualService, kind: &str, routes: &[Opaque]) {
        let upper = kind.to_ascii_uppercase();
        for (i, r) in routes.iter().enumerate() {
            let p = format!("spec.{kind}[{i}]");
            if kind == "tls" && seq(r.get("match")).is_empty() {
                self.schema(vs, &p, "TLS route must have at least one match condition");
            }
            let dests = seq(r.get("route"));
            if dests.is_empty() {
                self.schema(vs, &p, format!("{upper} route is required"));
            }
            let mut total = 0i64;
            for (j, d) in dests.iter().enumerate() {
                let host = d
                    .get("destination")
                    .and_then(|d| d.get("host"))
                    .and_then(|h| h.as_str())
                    .unwrap_or("");
                if host.is_empty() {
                    self.schema(
                        vs,
                        format!("{p}.route[{j}].destination.host"),
                        "destination host is required",
                    );
                }
                let w = d.get("weight").and_then(|w| w.as_i64()).unwrap_or(0);
                if w < 0 {
                    self.schema(
                        vs,
                        format!("{p}.route[{j}].weight"),
                        format!("weight {w} < 0"),
                    );
                }
                total = total.saturating_add(w.max(0));
            }
            if dests.len() > 1 && total == 0 {
                self.schema(vs, format!("{p}.route"), "total destination weight = 0");
            }
        }
    }

    pub(super) fn vs_gaps(&mut self, vs: &VirtualService) {
        if !vs.spec.tcp.is_empty() {
            self.gap(vs, "tcp", "spec.tcp");
        }
        if !vs.spec.tls.is_empty() {
            self.gap(vs, "tls", "spec.tls");
        }
        for (i, rule) in vs.spec.http.iter().enumerate() {
            let p = format!("spec.http[{i}]");
            let delay = rule.fault.as_ref().and_then(|f| f.delay.as_ref());
            let abort = rule.fault.as_ref().and_then(|f| f.abort.as_ref());
            let fields = [
                (
                    "retries.retryRemoteLocalities",
                    rule.retries
                        .as_ref()
                        .is_some_and(|r| r.retry_remote_localities.is_some_and(|b| b.0)),
                ),
                (
                    "fault.delay.exponentialDelay",
                    delay.is_some_and(|d| d.exponential_delay.is_some()),
                ),
                (
                    "fault.abort.http2Error",
                    abort.is_some_and(|a| a.http2_error.is_some()),
                ),
            ];
            for (field, set) in fields {
                if set {
                    self.gap(vs, field, format!("{p}.{field}"));
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MatchKind {
    Uri,
    Header,
    WithoutHeader,
    /// `scheme`, `method`, `authority`.
    Pseudo,
    Query,
}

pub(super) const KB: usize = 1024;
pub(super) const MB: usize = 1024 * KB;
pub(super) const JWT_CLAIM_PREFIX: &str = "@request.auth.claims.";

/// Istio's `supportedRetryOnPolicies` (`pkg/config/validation/agent/validation.go`).
pub(super) const RETRY_ON_POLICIES: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

pub(super) const CORS_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*",
];

/// Go's `http.StatusText` knows these; Istio takes any of them as a retriable status code.
pub(super) fn is_known_http_status(code: u16) -> bool {
    matches!(
        code,
        100..=103 | 200..=208 | 226 | 300..=305 | 307 | 308 | 400..=418 | 421..=426 | 428 | 429 | 431 | 451 | 500..=508 | 510 | 511
    )
}

pub(super) fn seq(v: Option<&Opaque>) -> Vec<&Opaque> {
    match v {
        Some(Opaque::Sequence(s)) => s.iter().collect(),
        _ => Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// DestinationRule: webhook and gaps
