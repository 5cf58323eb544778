//! Custom networking's ENIConfig (`crd.k8s.amazonaws.com/v1alpha1`, cluster-scoped): the subnet
//! and security groups of a node's pod ENIs, and which ENIConfig a node uses, with the VPC
//! CNI's precedence (`pkg/eniconfig/eniconfig.go`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// The label that names a node's ENIConfig before anything else.
pub const EXTERNAL_LABEL: &str = "vpc.amazonaws.com/externalEniConfig";
/// The default of `ENI_CONFIG_ANNOTATION_DEF` and `ENI_CONFIG_LABEL_DEF`.
pub const DEFAULT_DEF: &str = "k8s.amazonaws.com/eniConfig";
/// The ENIConfig a node without any of the names uses.
pub const DEFAULT_NAME: &str = "default";

/// An ENIConfig object.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct EniConfig {
    /// Metadata (the name is what nodes refer to).
    pub metadata: ObjectMeta,
    /// The pod ENIs' placement.
    pub spec: EniConfigSpec,
}

/// An ENIConfig's spec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EniConfigSpec {
    /// The subnet of the pod ENIs (required).
    pub subnet: String,
    /// Their security groups (the primary ENI's when empty).
    #[serde(default)]
    pub security_groups: Vec<String>,
}

// A hand-written `Resource`: kube's derive would pull in a JSON-schema generator for a schema
// that lives in deploy/eniconfig-crd.yaml anyway.
impl kube::Resource for EniConfig {
    type DynamicType = ();
    type Scope = kube::core::ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "ENIConfig".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "crd.k8s.amazonaws.com".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1alpha1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "eniconfigs".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Where a node's ENIConfig name is read from: `ENI_CONFIG_ANNOTATION_DEF` and
/// `ENI_CONFIG_LABEL_DEF`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameSources {
    /// The annotation (default `k8s.amazonaws.com/eniConfig`).
    pub annotation: String,
    /// The label (default `k8s.amazonaws.com/eniConfig`; often `topology.kubernetes.io/zone`).
    pub label: String,
}

impl Default for NameSources {
    fn default() -> Self {
        NameSources { annotation: DEFAULT_DEF.into(), label: DEFAULT_DEF.into() }
    }
}

/// The ENIConfig a node with these labels and annotations uses: the
/// `vpc.amazonaws.com/externalEniConfig` label, else the annotation, else the label the sources
/// name, else `default`.
pub fn name_for(labels: &BTreeMap<String, String>, annotations: &BTreeMap<String, String>, s: &NameSources) -> String {
    labels
        .get(EXTERNAL_LABEL)
        .or_else(|| annotations.get(&s.annotation))
        .or_else(|| labels.get(&s.label))
        .cloned()
        .unwrap_or_else(|| DEFAULT_NAME.to_string())
}

/// The spec of the ENIConfig named `name` among `configs`.
///
/// # Errors
/// None has that name (the VPC CNI answers "eniconfig is not available" and creates no ENI).
pub fn lookup<'a>(name: &str, configs: impl IntoIterator<Item = &'a EniConfig>) -> Result<EniConfigSpec, Missing> {
    configs
        .into_iter()
        .find(|c| c.metadata.name.as_deref() == Some(name))
        .map(|c| c.spec.clone())
        .ok_or_else(|| Missing(name.to_string()))
}

/// The ENIConfig a node names does not exist.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("ENIConfig {0:?} does not exist (kubectl get eniconfigs): no pod ENI can be created")]
pub struct Missing(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn config(name: &str, subnet: &str, sg: &str) -> EniConfig {
        EniConfig {
            metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() },
            spec: EniConfigSpec { subnet: subnet.into(), security_groups: vec![sg.into()] },
        }
    }

    /// The cases of the VPC CNI's `TestMyENIConfig` (`pkg/eniconfig/eniconfig_test.go`), one
    /// row each: the node's labels and annotations, the label and annotation definitions, the
    /// ENIConfigs that exist, and the subnet chosen (`None`: "eniconfig is not available").
    #[test]
    fn a_nodes_eniconfig_follows_the_vpc_cnis_precedence_case_by_case() {
        let az1 = config("az1", "SB1", "SG1");
        let az2 = config("az2", "SB2", "SG2");
        let custom = config("custom", "SB1", "SG1");
        const ZONE: &str = "topology.kubernetes.io/zone";
        const MY: &str = "k8s.amazonaws.com/myENIConfig";
        type Row<'a> = (
            &'a [(&'a str, &'a str)],
            &'a [(&'a str, &'a str)],
            Option<&'a str>,
            Option<&'a str>,
            Vec<&'a EniConfig>,
            Option<&'a str>,
        );
        let rows: Vec<Row> = vec![
            (&[(DEFAULT_DEF, "az1")], &[], None, None, vec![&az1], Some("az1")),
            (&[(DEFAULT_DEF, "az1")], &[], None, None, vec![&az2], None),
            (&[(ZONE, "az1")], &[], Some(ZONE), None, vec![&az1], Some("az1")),
            (&[(ZONE, "az2")], &[], Some(ZONE), None, vec![&az1], None),
            (&[(ZONE, "az2")], &[(DEFAULT_DEF, "az1")], None, None, vec![&az1], Some("az1")),
            (&[(ZONE, "az2")], &[(DEFAULT_DEF, "az1")], None, None, vec![&az2], None),
            (&[(ZONE, "az2")], &[(MY, "az1")], None, Some(MY), vec![&az1], Some("az1")),
            (&[(EXTERNAL_LABEL, "custom"), (ZONE, "az2")], &[], Some(ZONE), None, vec![&az1, &custom], Some("custom")),
            (&[(ZONE, "az2")], &[(MY, "az1")], None, Some(MY), vec![&az2], None),
        ];
        for (i, (labels, annotations, label, annotation, configs, want)) in rows.into_iter().enumerate() {
            let sources = NameSources {
                label: label.unwrap_or(DEFAULT_DEF).into(),
                annotation: annotation.unwrap_or(DEFAULT_DEF).into(),
            };
            let name = name_for(&m(labels), &m(annotations), &sources);
            let got = lookup(&name, configs.iter().copied());
            match want {
                Some(w) => assert_eq!(
                    got,
                    Ok(configs.iter().find(|c| c.metadata.name.as_deref() == Some(w)).unwrap().spec.clone()),
                    "row {i}"
                ),
                None => assert!(got.is_err(), "row {i}: {got:?}"),
            }
        }
        assert_eq!(name_for(&m(&[]), &m(&[]), &NameSources::default()), "default");
    }
    #[test]
    fn an_eniconfig_reads_as_the_crd_defines_it() {
        let e: EniConfig = serde_json::from_value(serde_json::json!({
            "apiVersion": "crd.k8s.amazonaws.com/v1alpha1", "kind": "ENIConfig",
            "metadata": {"name": "us-west-2a"},
            "spec": {"subnet": "subnet-0abc", "securityGroups": ["sg-1", "sg-2"]}
        }))
        .unwrap();
        assert_eq!(
            e.spec,
            EniConfigSpec { subnet: "subnet-0abc".into(), security_groups: vec!["sg-1".into(), "sg-2".into()] }
        );
        let no_groups: EniConfig =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "x"}, "spec": {"subnet": "subnet-1"}}))
                .unwrap();
        assert!(no_groups.spec.security_groups.is_empty());
        assert_eq!(
            <EniConfig as kube::Resource>::url_path(&(), None),
            "/apis/crd.k8s.amazonaws.com/v1alpha1/eniconfigs"
        );
    }
}
