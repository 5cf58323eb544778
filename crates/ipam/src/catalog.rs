//! The EC2 instance-type catalog: per-type ENI and address limits, embedded from
//! `data/ec2-instance-types.tsv` (facts from `DescribeInstanceTypes`).

use std::collections::HashMap;
use std::sync::OnceLock;
use thiserror::Error;

const EMBEDDED_TSV: &str = include_str!("../../../data/ec2-instance-types.tsv");

/// The networking facts of one instance type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceType {
    /// The API name, e.g. `m5.large`.
    pub name: String,
    /// Virtual CPUs (the max-pods cap depends on it); `None` where the source has no value.
    pub vcpus: Option<u32>,
    /// Memory in MiB; `None` where unknown.
    pub memory_mib: Option<u64>,
    /// `MaximumNetworkInterfaces` of the default network card.
    pub max_enis: u32,
    /// IPv4 addresses per ENI, counting the ENI's primary address.
    pub ipv4_per_eni: u32,
    /// IPv6 addresses per ENI (0 where IPv6 is unsupported); `None` where unknown.
    pub ipv6_per_eni: Option<u32>,
    /// Index of the default network card.
    pub default_card: u32,
    /// `(card index, max ENIs)` for each network card.
    pub network_cards: Vec<(u32, u32)>,
    /// Hypervisor as EC2 reports it: `nitro`, `xen` or `unknown`.
    pub hypervisor: String,
    /// Whether the type is bare metal.
    pub bare_metal: bool,
}

impl InstanceType {
    /// Prefix delegation needs a Nitro or bare-metal instance (VPC CNI `ipamd.go`).
    pub fn supports_prefix_delegation(&self) -> bool {
        self.hypervisor == "nitro" || self.bare_metal
    }

    /// vCPUs, or where the source lacks them an estimate from the size name (`Nxlarge` has
    /// about 4N vCPUs, `metal` is large), good enough to pick the 110 or 250 max-pods cap.
    pub fn vcpus_or_estimate(&self) -> u32 {
        if let Some(v) = self.vcpus {
            return v;
        }
        let size = self.name.rsplit_once('.').map_or("", |(_, s)| s);
        if size.ends_with("metal") {
            return 64;
        }
        match size.strip_suffix("xlarge") {
            Some("") => 4,
            Some(n) => n.parse::<u32>().map_or(4, |n| n * 4),
            None => 2,
        }
    }
}

/// Why the catalog text could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("instance catalog line {line}: field `{field}` has bad value {value:?}")]
pub struct CatalogParseError {
    /// 1-based line number.
    pub line: usize,
    /// Column name.
    pub field: &'static str,
    /// The offending text.
    pub value: String,
}

/// An instance type the catalog does not know.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("unknown instance type {name:?}{}", suggest(.suggestions))]
pub struct UnknownInstanceType {
    /// The name asked for.
    pub name: String,
    /// The closest known names, best first.
    pub suggestions: Vec<String>,
}

fn suggest(s: &[String]) -> String {
    if s.is_empty() { String::new() } else { format!(" (did you mean {}?)", s.join(", ")) }
}

/// All known instance types, looked up by name.
#[derive(Debug, Clone)]
pub struct Catalog {
    types: Vec<InstanceType>,
    by_name: HashMap<String, usize>,
}

const COLUMNS: [&str; 10] = [
    "instance_type",
    "vcpus",
    "memory_mib",
    "max_enis",
    "ipv4_per_eni",
    "ipv6_per_eni",
    "default_card",
    "network_cards",
    "hypervisor",
    "bare_metal",
];

impl Catalog {
    /// The catalog compiled into the binary.
    pub fn embedded() -> &'static Catalog {
        static CATALOG: OnceLock<Catalog> = OnceLock::new();
        // The embedded file is checked by the `embedded_catalog_parses` test, so it cannot fail.
        CATALOG.get_or_init(|| Catalog::parse(EMBEDDED_TSV).expect("embedded catalog is valid"))
    }

    /// Parses the TSV format of `data/ec2-instance-types.tsv` (`#` comments, one header line).
    ///
    /// # Errors
    /// Names the line, column and value of the first malformed field.
    pub fn parse(text: &str) -> Result<Catalog, CatalogParseError> {
        let mut types = Vec::new();
        let mut header_seen = false;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            if raw.starts_with('#') || raw.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = raw.split('\t').collect();
            if !header_seen {
                header_seen = true;
                if fields.first() == Some(&"instance_type") {
                    continue;
                }
            }
            let bad = |field: &'static str, value: &str| CatalogParseError { line, field, value: value.to_string() };
            if fields.len() != COLUMNS.len() {
                return Err(bad("columns", &fields.len().to_string()));
            }
            let num = |idx: usize| -> Result<u64, CatalogParseError> {
                fields[idx].parse::<u64>().map_err(|_| bad(COLUMNS[idx], fields[idx]))
            };
            let small = |idx: usize| -> Result<u32, CatalogParseError> {
                u32::try_from(num(idx)?).map_err(|_| bad(COLUMNS[idx], fields[idx]))
            };
            let mut cards = Vec::new();
            for part in fields[7].split(',').filter(|p| !p.is_empty()) {
                let (a, b) = part.split_once(':').ok_or_else(|| bad("network_cards", fields[7]))?;
                let a = a.parse().map_err(|_| bad("network_cards", fields[7]))?;
                let b = b.parse().map_err(|_| bad("network_cards", fields[7]))?;
                cards.push((a, b));
            }
            let bare_metal = match fields[9] {
                "true" => true,
                "false" => false,
                other => return Err(bad("bare_metal", other)),
            };
            let opt_small = |idx: usize| -> Result<Option<u32>, CatalogParseError> {
                if fields[idx].is_empty() { Ok(None) } else { small(idx).map(Some) }
            };
            let t = InstanceType {
                name: fields[0].to_string(),
                vcpus: opt_small(1)?,
                memory_mib: if fields[2].is_empty() { None } else { Some(num(2)?) },
                max_enis: small(3)?,
                ipv4_per_eni: small(4)?,
                ipv6_per_eni: opt_small(5)?,
                default_card: small(6)?,
                network_cards: cards,
                hypervisor: fields[8].to_string(),
                bare_metal,
            };
            if t.name.is_empty() {
                return Err(bad("instance_type", ""));
            }
            if t.max_enis == 0 {
                return Err(bad("max_enis", fields[3]));
            }
            if t.ipv4_per_eni < 2 {
                return Err(bad("ipv4_per_eni", fields[4]));
            }
            types.push(t);
        }
        let by_name = types.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Ok(Catalog { types, by_name })
    }

    /// Looks a type up by its exact API name.
    ///
    /// # Errors
    /// [`UnknownInstanceType`] with up to three close names.
    pub fn get(&self, name: &str) -> Result<&InstanceType, UnknownInstanceType> {
        if let Some(i) = self.by_name.get(name) {
            return Ok(&self.types[*i]);
        }
        Err(UnknownInstanceType { name: name.to_string(), suggestions: self.closest(name, 3) })
    }

    /// Every type, in file order.
    pub fn iter(&self) -> impl Iterator<Item = &InstanceType> {
        self.types.iter()
    }

    /// Number of types.
    pub fn len(&self) -> usize {
        self.types.len()
    }

    /// Whether the catalog is empty.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    fn closest(&self, name: &str, n: usize) -> Vec<String> {
        let lower = name.to_ascii_lowercase();
        let mut scored: Vec<(usize, &str)> =
            self.types.iter().map(|t| (edit_distance(&lower, &t.name), t.name.as_str())).collect();
        scored.sort();
        let limit = (lower.len() / 2).max(2);
        scored.into_iter().filter(|(d, _)| *d <= limit).take(n).map(|(_, s)| s.to_string()).collect()
    }
}

/// Levenshtein distance between two strings (by bytes; names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalog_parses() {
        let c = Catalog::embedded();
        assert_eq!(c.len(), 1418);
        let m5 = c.get("m5.large").unwrap();
        assert_eq!((m5.max_enis, m5.ipv4_per_eni, m5.vcpus), (3, 10, Some(2)));
        let p3 = c.get("p3.16xlarge").unwrap();
        assert_eq!((p3.vcpus, p3.vcpus_or_estimate()), (None, 64));
        assert!(m5.supports_prefix_delegation());
    }

    #[test]
    fn prefix_delegation_needs_nitro_or_metal() {
        let c = Catalog::embedded();
        assert!(!c.get("t2.micro").unwrap().supports_prefix_delegation());
        let metal = c.get("m5.metal").unwrap();
        assert_eq!(metal.hypervisor, "unknown");
        assert!(metal.supports_prefix_delegation());
    }

    #[test]
    fn unknown_type_suggests_close_names() {
        let err = Catalog::embedded().get("m5.lrage").unwrap_err();
        assert_eq!(err.suggestions.first().map(String::as_str), Some("m5.large"));
        assert!(err.to_string().contains("\"m5.lrage\""));
        assert!(err.to_string().contains("m5.large"));
    }

    #[test]
    fn nonsense_gets_no_suggestions() {
        let err = Catalog::embedded().get("qqqqqqqqqqqqqqqqqqqq").unwrap_err();
        assert!(err.suggestions.is_empty());
    }

    #[test]
    fn malformed_line_names_field_and_value() {
        let text = "instance_type\tvcpus\tmemory_mib\tmax_enis\tipv4_per_eni\tipv6_per_eni\tdefault_card\tnetwork_cards\thypervisor\tbare_metal\n\
                    x.large\t2\t8192\tthree\t10\t10\t0\t0:3\tnitro\tfalse\n";
        let err = Catalog::parse(text).unwrap_err();
        assert_eq!(err, CatalogParseError { line: 2, field: "max_enis", value: "three".into() });
    }

    #[test]
    fn distance_is_levenshtein() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
