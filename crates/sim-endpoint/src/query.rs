//! A parsed EC2 Query API request: the form-encoded parameters, with EC2's list, filter and tag
//! conventions (`Name.N`, `Filter.N.Name` / `Filter.N.Value.M`, `TagSpecification.N.Tag.M`).

use std::collections::BTreeMap;

/// The parameters of one request, body and query string together.
#[derive(Clone, Debug, Default)]
pub struct Params(BTreeMap<String, String>);

/// A request EC2 refuses before doing anything: the code and message it answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// EC2 error code.
    pub code: &'static str,
    /// Message naming the parameter and value.
    pub message: String,
}

impl Refusal {
    /// `MissingParameter` naming `name`.
    pub fn missing_param(name: &str) -> Refusal {
        Refusal { code: "MissingParameter", message: format!("The request must contain the parameter {name}") }
    }

    fn invalid(name: &str, value: &str, want: &str) -> Refusal {
        Refusal {
            code: "InvalidParameterValue",
            message: format!("Value ({value}) for parameter {name} is invalid. {want}"),
        }
    }
}

impl Params {
    /// Parses form-encoded bytes (a POST body or a URI's query), later pairs adding to earlier.
    pub fn parse(parts: &[&[u8]]) -> Params {
        let mut m = BTreeMap::new();
        for p in parts {
            for (k, v) in form_urlencoded::parse(p) {
                m.insert(k.into_owned(), v.into_owned());
            }
        }
        Params(m)
    }

    /// The value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The value of `name`, which must be given.
    ///
    /// # Errors
    /// `MissingParameter` naming it.
    pub fn required(&self, name: &str) -> Result<&str, Refusal> {
        self.get(name).ok_or_else(|| Refusal::missing_param(name))
    }

    /// `name` parsed as `T`, if given.
    ///
    /// # Errors
    /// `InvalidParameterValue` naming it and the value.
    pub fn parsed<T: std::str::FromStr>(&self, name: &str, want: &str) -> Result<Option<T>, Refusal> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| Refusal::invalid(name, v, want)),
        }
    }

    /// A boolean parameter (`true`/`false`), if given.
    ///
    /// # Errors
    /// `InvalidParameterValue` for anything else.
    pub fn flag(&self, name: &str) -> Result<Option<bool>, Refusal> {
        match self.get(name) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(Refusal::invalid(name, v, "Expected true or false.")),
        }
    }

    /// The list `name.1`, `name.2`, ... in index order.
    pub fn list(&self, name: &str) -> Vec<String> {
        let prefix = format!("{name}.");
        let mut items: Vec<(u32, String)> = self
            .0
            .iter()
            .filter_map(|(k, v)| {
                let n = k.strip_prefix(&prefix)?;
                // `1`, not `01`: one spelling per index.
                (!n.starts_with('0')).then(|| n.parse::<u32>().ok().map(|i| (i, v.clone()))).flatten()
            })
            .collect();
        items.sort_by_key(|(i, _)| *i);
        items.into_iter().map(|(_, v)| v).collect()
    }

    /// The filters, `Filter.N.Name` with its values `Filter.N.Value.M`, in index order; a
    /// filter without a name has the name `""` (refused as unknown, never dropped: dropping it
    /// would widen the answer).
    pub fn filters(&self) -> Vec<(String, Vec<String>)> {
        self.groups("Filter")
            .into_iter()
            .map(|n| {
                let name = self.get(&format!("Filter.{n}.Name")).unwrap_or_default().to_string();
                (name, self.list(&format!("Filter.{n}.Value")))
            })
            .collect()
    }

    /// The tags of `TagSpecification.N` whose `ResourceType` is `resource`.
    pub fn tags_for(&self, resource: &str) -> Vec<(String, String)> {
        let mut tags = Vec::new();
        for n in self.groups("TagSpecification") {
            if self.get(&format!("TagSpecification.{n}.ResourceType")) != Some(resource) {
                continue;
            }
            for m in self.groups(&format!("TagSpecification.{n}.Tag")) {
                if let Some(k) = self.get(&format!("TagSpecification.{n}.Tag.{m}.Key")) {
                    let v = self.get(&format!("TagSpecification.{n}.Tag.{m}.Value")).unwrap_or_default();
                    tags.push((k.to_string(), v.to_string()));
                }
            }
        }
        tags
    }

    /// The indexes `N` of the structures `name.N.*`, in order.
    fn groups(&self, name: &str) -> Vec<u32> {
        let prefix = format!("{name}.");
        let mut ns: Vec<u32> =
            self.0.keys().filter_map(|k| k.strip_prefix(&prefix)?.split_once('.')?.0.parse().ok()).collect();
        ns.sort_unstable();
        ns.dedup();
        ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_filters_and_tags_come_back_in_index_order() {
        let body = b"Action=X&PrivateIpAddress.2=10.0.0.2&PrivateIpAddress.1=10.0.0.1&PrivateIpAddress.10=10.0.0.10\
&Filter.2.Name=status&Filter.2.Value.1=available&Filter.1.Name=tag-key&Filter.1.Value.1=a%2Fb\
&TagSpecification.1.ResourceType=network-interface&TagSpecification.1.Tag.1.Key=k&TagSpecification.1.Tag.1.Value=v\
&TagSpecification.2.ResourceType=instance&TagSpecification.2.Tag.1.Key=other";
        let p = Params::parse(&[body]);
        assert_eq!(p.list("PrivateIpAddress"), ["10.0.0.1", "10.0.0.2", "10.0.0.10"]);
        assert_eq!(
            p.filters(),
            [("tag-key".to_string(), vec!["a/b".to_string()]), ("status".into(), vec!["available".into()])]
        );
        assert_eq!(p.tags_for("network-interface"), [("k".to_string(), "v".to_string())]);
        assert_eq!(p.required("Nope").unwrap_err().code, "MissingParameter");
        let bad = Params::parse(&[b"DeviceIndex=x"]);
        let e = bad.parsed::<u32>("DeviceIndex", "Expected a number.").unwrap_err();
        assert!(e.message.contains("DeviceIndex") && e.message.contains("(x)"), "{e:?}");
    }
}
