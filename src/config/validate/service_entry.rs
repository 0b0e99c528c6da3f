//! ServiceEntry and WorkloadEntry: the webhook's schema checks (hosts, ports, resolution,
//! endpoints, addresses).

use super::*;

impl Out {
    pub(super) fn service_entry_schema(&mut self, se: &ServiceEntry) {
        let spec = &se.spec;
        if spec.hosts.is_empty() {
            self.schema(
                se,
                "spec.hosts",
                "service entry must have at least one host",
            );
        }
        for (i, host) in spec.hosts.iter().enumerate() {
            if host == "*" {
                self.schema(se, format!("spec.hosts[{i}]"), "invalid host *");
            } else if let Err(e) = validate_wildcard_domain(host) {
                self.schema(
                    se,
                    format!("spec.hosts[{i}]"),
                    format!("invalid host {host:?}: {e}"),
                );
            }
        }
        let resolution = spec.resolution.unwrap_or(Resolution::None);
        for (i, a) in spec.addresses.iter().enumerate() {
            let p = format!("spec.addresses[{i}]");
            match a.split_once('/') {
                None if a.parse::<IpAddr>().is_err() => {
                    self.schema(se, p, format!("{a:?} is not a valid IP address"));
                }
                None => {}
                Some((ip, bits)) => {
                    let max = match ip.parse::<IpAddr>() {
                        Ok(IpAddr::V4(_)) => Some(32),
                        Ok(IpAddr::V6(_)) => Some(128),
                        Err(_) => None,
                    };
                    if !max.is_some_and(|m| bits.parse::<u8>().is_ok_and(|b| b <= m)) {
                        self.schema(se, p, format!("{a:?} is not a valid CIDR block"));
                    } else if !matches!(resolution, Resolution::None | Resolution::Static) {
                        self.schema(
                            se,
                            p,
                            "CIDR addresses are allowed only for NONE/STATIC resolution types",
                        );
                    }
                }
            }
        }
        let mut port_names = HashSet::new();
        let mut port_numbers = HashSet::new();
        for (i, port) in spec.ports.iter().enumerate() {
            let p = format!("spec.ports[{i}]");
            let name = port.name.as_deref().unwrap_or("");
            if !is_dns1123_label(name) {
                self.schema(
                    se,
                    format!("{p}.name"),
                    format!("invalid port name: {name:?} (must be a DNS-1123 label)"),
                );
            } else if !port_names.insert(name) {
                self.schema(
                    se,
                    format!("{p}.name"),
                    format!("service entry port name {name:?} already defined"),
                );
            }
            let number = port.number.map_or(0, |n| n.0);
            self.port_number(se, format!("{p}.number"), number);
            if !port_numbers.insert(number) {
                self.schema(
                    se,
                    format!("{p}.number"),
                    format!("service entry port {number} already defined"),
                );
            }
            if let Some(t) = port.target_port.map(|t| t.0).filter(|t| *t != 0) {
                self.port_number(se, format!("{p}.targetPort"), t);
            }
            let known = |proto: &str| {
                proto.is_empty() || PROTOCOLS.iter().any(|k| k.eq_ignore_ascii_case(proto))
            };
            if let Some(proto) = port.protocol.as_deref().filter(|p| !known(p)) {
                self.schema(
                    se,
                    format!("{p}.protocol"),
                    format!("unrecognized protocol {proto:?}"),
                );
            }
        }
        if spec.workload_selector.is_some() && !spec.endpoints.is_empty() {
            self.schema(
                se,
                "spec.workloadSelector",
                "only one of WorkloadSelector or Endpoints is allowed in Service Entry",
            );
        }
        match resolution {
            Resolution::None => {
                if !spec.endpoints.is_empty() {
                    self.schema(
                        se,
                        "spec.endpoints",
                        "no endpoints should be provided for resolution type none",
                    );
                }
                if spec.workload_selector.is_some() {
                    self.schema_warning(
                        se,
                        "spec.workloadSelector",
                        "workloadSelector should not be set when resolution mode is NONE",
                    );
                }
            }
            Resolution::Dns | Resolution::DnsRoundRobin => {
                if spec.endpoints.is_empty() {
                    for (i, host) in spec.hosts.iter().enumerate() {
                        if host.starts_with('*') {
                            self.schema(
                                se,
                                format!("spec.hosts[{i}]"),
                                format!("hosts must be FQDN if no endpoints are provided for resolution mode {resolution}"),
                            );
                        }
                    }
                }
                if resolution == Resolution::DnsRoundRobin && spec.endpoints.len() > 1 {
                    self.schema(
                        se,
                        "spec.endpoints",
                        format!(
                            "there must only be 0 or 1 endpoint for resolution mode {resolution}"
                        ),
                    );
                }
            }
            Resolution::Static | Resolution::DynamicDns => {}
        }
        let declared: Vec<&str> = spec
            .ports
            .iter()
            .filter_map(|p| p.name.as_deref())
            .collect();
        for (i, ep) in spec.endpoints.iter().enumerate() {
            let p = format!("spec.endpoints[{i}]");
            match ep.address.as_deref().unwrap_or("") {
                "" => self.schema(se, format!("{p}.address"), "address is required"),
                addr if addr.parse::<IpAddr>().is_ok() || addr.starts_with(UNIX_PREFIX) => {}
                addr if resolution == Resolution::Static => {
                    self.schema(
                        se,
                        format!("{p}.address"),
                        format!("endpoint address {addr:?} is not a valid IP address"),
                    );
                }
                addr if validate_wildcard_domain(addr).is_err() || addr.starts_with('*') => {
                    self.schema(
                        se,
                        format!("{p}.address"),
                        format!("endpoint address {addr:?} is not a valid FQDN or an IP address"),
                    );
                }
                _ => {}
            }
            for name in ep.ports.keys() {
                if !declared.contains(&name.as_str()) {
                    self.schema(
                        se,
                        format!("{p}.ports.{name}"),
                        format!("endpoint port {name:?} is not defined by the service entry (ports: {})", declared.join(", ")),
                    );
                }
            }
            self.endpoint_fields(se, &p, ep);
        }
        self.export_to(se, &spec.export_to);
    }

    /// What ServiceEntry endpoints and WorkloadEntries share.
    pub(super) fn endpoint_fields<S>(&mut self, r: &Resource<S>, p: &str, ep: &WorkloadEntrySpec) {
        for (name, Int(port)) in &ep.ports {
            if !is_dns1123_label(name) {
                self.schema(
                    r,
                    format!("{p}.ports.{name}"),
                    format!("invalid port name: {name:?} (must be a DNS-1123 label)"),
                );
            }
            self.port_number(r, format!("{p}.ports.{name}"), *port);
        }
        if let Some(w) = ep
            .weight
            .map(|w| w.0)
            .filter(|w| !(0..=i64::from(u32::MAX)).contains(w))
        {
            self.schema(
                r,
                format!("{p}.weight"),
                format!("weight {w} must be in range 0..{}", u32::MAX),
            );
        }
    }

    pub(super) fn workload_entry(&mut self, we: &WorkloadEntry) {
        let spec = &we.spec;
        // Whether the address must be an IP depends on the ServiceEntry that selects this entry
        // (DNS resolution takes a host name), which a standalone entry does not know.
        if spec.address.as_deref().unwrap_or("").is_empty() {
            match spec.network.as_deref().filter(|n| !n.is_empty()) {
                None => self.schema(we, "spec.address", "address is required"),
                Some(n) => self.schema_warning(
                    we,
                    "spec.address",
                    format!("address is unset with network {n:?}"),
                ),
            }
        }
        self.endpoint_fields(we, "spec", spec);
    }
}

pub(super) const UNIX_PREFIX: &str = "unix://";

/// Istio's `protocol.Parse` names (case-insensitive).
pub(crate) const PROTOCOLS: &[&str] = &[
    "HTTP",
    "HTTPS",
    "GRPC",
    "GRPC-WEB",
    "HTTP2",
    "HTTP_PROXY",
    "MONGO",
    "MYSQL",
    "REDIS",
    "TCP",
    "TLS",
    "UDP",
];

// ---------------------------------------------------------------------------------------------
// Names and values
