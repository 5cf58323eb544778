//! The shell scripts `podip plan --emit` writes: POSIX sh that runs as emitted with the AWS CLI.
//! Every value the script needs and the plan does not know is a variable declared at the top,
//! with a comment saying where it comes from; ids the plan knows (an import's) are its defaults.
//! Each step checks what exists first, so a script stopped half-way is simply run again.

use crate::scenario::{Scenario, SubnetSpec};
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// A helper the body calls; each is written once, before the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Helper {
    /// `subnet_id CIDR`: the id of the VPC's subnet with that block.
    SubnetId,
    /// `vpc_cidr CIDR`: associates a block with the VPC unless it is, and waits for it.
    VpcCidr,
    /// `subnet AZ CIDR NAME`: the id of that subnet, created unless it exists.
    Subnet,
    /// `reserve SUBNET CIDR`: a prefix reservation, made unless it exists.
    Reserve,
    /// `nat_gateway SUBNET NAME ADDRESSES`: a private NAT gateway, created unless it exists.
    NatGateway,
    /// `route_table NAME`: a route table, created unless it exists.
    RouteTable,
    /// `use_route_table TABLE SUBNET`: associates a subnet with a table.
    UseRouteTable,
    /// `nat_route TABLE DESTINATION NAT`: a route to a NAT gateway, made or replaced.
    NatRoute,
    /// `eniconfig NAME SUBNET`: one ENIConfig document, with `$POD_SECURITY_GROUPS`.
    EniConfig,
    /// `same_routes NEW OLD`: subnet NEW gets subnet OLD's route table.
    SameRoutes,
}

impl Helper {
    fn text(self) -> &'static str {
        match self {
            Helper::SubnetId => {
                r#"# The id of the VPC's subnet with CIDR block $1.
subnet_id() {
  id=$(ec2 describe-subnets --filters "Name=vpc-id,Values=$VPC_ID" "Name=cidr-block,Values=$1" --query 'Subnets[0].SubnetId')
  case $id in
    subnet-*) echo "$id" ;;
    *) echo "no subnet with CIDR block $1 in $VPC_ID" >&2; return 1 ;;
  esac
}
"#
            }
            Helper::VpcCidr => {
                r#"# Associates CIDR block $1 with the VPC unless it is, and waits until it is associated.
vpc_cidr() {
  tries=0
  while :; do
    state=$(ec2 describe-vpcs --vpc-ids "$VPC_ID" --query "Vpcs[0].CidrBlockAssociationSet[?CidrBlock=='$1'] | [0].CidrBlockState.State")
    case $state in
      associated) return 0 ;;
      associating) ;;
      None|disassociated)
        if [ "$tries" -gt 0 ]; then echo "$1: the association with $VPC_ID did not take ($state)" >&2; return 1; fi
        ec2 associate-vpc-cidr-block --vpc-id "$VPC_ID" --cidr-block "$1" >/dev/null
        tries=1
        continue ;;
      *) echo "$1: $state in $VPC_ID" >&2; return 1 ;;
    esac
    tries=$((tries + 1))
    if [ "$tries" -gt 60 ]; then echo "$1: not associated with $VPC_ID after 2 minutes" >&2; return 1; fi
    sleep 2
  done
}
"#
            }
            Helper::Subnet => {
                r#"# The id of the subnet with CIDR block $2 in AZ $1, created (named $3) unless it exists.
subnet() {
  found=$(ec2 describe-subnets --filters "Name=vpc-id,Values=$VPC_ID" "Name=cidr-block,Values=$2" --query 'Subnets[0].[SubnetId,AvailabilityZone]')
  case $found in
    subnet-*)
      set -- "$1" "$2" "$3" $found
      if [ "$5" != "$1" ]; then echo "$2 exists in $5, not $1: $4" >&2; return 1; fi
      echo "$4" ;;
    *)
      ec2 create-subnet --vpc-id "$VPC_ID" --availability-zone "$1" --cidr-block "$2" \
        --tag-specifications "ResourceType=subnet,Tags=[{Key=Name,Value=$3}]" --query Subnet.SubnetId ;;
  esac
}
"#
            }
            Helper::Reserve => {
                r#"# Reserves $2 in subnet $1 for /28 prefixes, unless it is.
reserve() {
  have=$(ec2 get-subnet-cidr-reservations --subnet-id "$1" --query "length(SubnetIpv4CidrReservations[?Cidr=='$2'])")
  if [ "$have" = 0 ]; then
    ec2 create-subnet-cidr-reservation --subnet-id "$1" --cidr "$2" --reservation-type prefix \
      --description 'podip: /28 prefixes for pods' >/dev/null
  fi
}
"#
            }
            Helper::NatGateway => {
                r#"# The id of the private NAT gateway named $2 in subnet $1 with $3 addresses, created unless
# it exists; waits until it is available.
nat_gateway() {
  id=$(ec2 describe-nat-gateways --filter "Name=subnet-id,Values=$1" "Name=state,Values=pending,available" \
    --query "NatGateways[?Tags[?Key=='Name' && Value=='$2']] | [0].NatGatewayId")
  case $id in
    nat-*) ;;
    *)
      if [ "$3" -gt 1 ]; then
        id=$(ec2 create-nat-gateway --connectivity-type private --subnet-id "$1" \
          --secondary-private-ip-address-count $(($3 - 1)) \
          --tag-specifications "ResourceType=natgateway,Tags=[{Key=Name,Value=$2}]" --query NatGateway.NatGatewayId)
      else
        id=$(ec2 create-nat-gateway --connectivity-type private --subnet-id "$1" \
          --tag-specifications "ResourceType=natgateway,Tags=[{Key=Name,Value=$2}]" --query NatGateway.NatGatewayId)
      fi ;;
  esac
  ec2 wait nat-gateway-available --nat-gateway-ids "$id"
  echo "$id"
}
"#
            }
            Helper::RouteTable => {
                r#"# The id of the VPC's route table named $1, created unless it exists.
route_table() {
  id=$(ec2 describe-route-tables --filters "Name=vpc-id,Values=$VPC_ID" \
    --query "RouteTables[?Tags[?Key=='Name' && Value=='$1']] | [0].RouteTableId")
  case $id in
    rtb-*) echo "$id" ;;
    *) ec2 create-route-table --vpc-id "$VPC_ID" \
         --tag-specifications "ResourceType=route-table,Tags=[{Key=Name,Value=$1}]" --query RouteTable.RouteTableId ;;
  esac
}
"#
            }
            Helper::UseRouteTable => {
                r#"# Makes route table $1 the one of subnet $2.
use_route_table() {
  assoc=$(ec2 describe-route-tables --filters "Name=association.subnet-id,Values=$2" \
    --query "RouteTables[].Associations[?SubnetId=='$2'][] | [0].[RouteTableAssociationId,RouteTableId]")
  case $assoc in
    rtbassoc-*)
      set -- "$1" "$2" $assoc
      if [ "$4" != "$1" ]; then
        ec2 replace-route-table-association --association-id "$3" --route-table-id "$1" >/dev/null
      fi ;;
    *) ec2 associate-route-table --route-table-id "$1" --subnet-id "$2" >/dev/null ;;
  esac
}
"#
            }
            Helper::NatRoute => {
                r#"# Sends $2 from route table $1 to NAT gateway $3 (never over the VPC's own local route).
nat_route() {
  via=$(ec2 describe-route-tables --route-table-ids "$1" \
    --query "RouteTables[0].Routes[?DestinationCidrBlock=='$2'] | [0].[NatGatewayId,GatewayId]")
  set -- "$1" "$2" "$3" $via
  if [ "${5:-}" = local ]; then echo "$2 is the VPC's own block (its local route reaches it)" >&2; return 1; fi
  if [ "${4:-}" = "$3" ]; then return 0; fi
  if [ "${4:-None}" = None ] && [ "${5:-None}" = None ]; then
    ec2 create-route --route-table-id "$1" --destination-cidr-block "$2" --nat-gateway-id "$3" >/dev/null
  else
    ec2 replace-route --route-table-id "$1" --destination-cidr-block "$2" --nat-gateway-id "$3" >/dev/null
  fi
}
"#
            }
            Helper::SameRoutes => {
                r#"# Gives subnet $1 the route table of subnet $2 (when $2 has one of its own; otherwise both
# use the VPC's main route table already).
same_routes() {
  rt=$(ec2 describe-route-tables --filters "Name=association.subnet-id,Values=$2" --query 'RouteTables[0].RouteTableId')
  case $rt in
    rtb-*) use_route_table "$rt" "$1" ;;
  esac
}
"#
            }
            Helper::EniConfig => {
                r#"# One ENIConfig named $1 for subnet $2, with the security groups in $POD_SECURITY_GROUPS.
eniconfig() {
  printf -- '---\napiVersion: crd.k8s.amazonaws.com/v1alpha1\nkind: ENIConfig\nmetadata:\n  name: %s\nspec:\n  subnet: %s\n' "$1" "$2"
  if [ -n "$POD_SECURITY_GROUPS" ]; then
    printf '  securityGroups:\n'
    for g in $POD_SECURITY_GROUPS; do printf '    - %s\n' "$g"; done
  fi
}
"#
            }
        }
    }
}

/// One emitted script.
pub struct Script {
    what: String,
    vars: String,
    lookups: String,
    declared: BTreeSet<String>,
    helpers: BTreeSet<Helper>,
    body: String,
}

/// `s` as one shell word (single-quoted unless it is plainly safe).
pub fn quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@+".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `s` made safe for one comment line: control characters become spaces.
pub fn comment_text(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// A shell variable name from free text: `us-east-1a` becomes `US_EAST_1A`.
pub fn var_name(prefix: &str, s: &str) -> String {
    let tail: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    format!("{prefix}_{tail}")
}

impl Script {
    /// A script for `sc` that does `what` (one line).
    pub fn new(sc: &Scenario, what: &str) -> Script {
        let mut s = Script {
            what: comment_text(what),
            vars: String::new(),
            lookups: String::new(),
            declared: BTreeSet::new(),
            helpers: BTreeSet::new(),
            body: String::new(),
        };
        s.var("REGION", &format!("the cluster's region (scenario {})", comment_text(&sc.name)), Some(&sc.region));
        s
    }

    /// Declares `name` once: its default (a shell word or `$(...)`), or required when `None`.
    fn var(&mut self, name: &str, from: &str, default: Option<&str>) {
        if !self.declared.insert(name.to_string()) {
            return;
        }
        let _ = writeln!(self.vars, "# {}", comment_text(from));
        match default {
            Some(d) if d.starts_with("$(") => {
                // Found once the helpers are defined, unless given.
                let _ = writeln!(self.vars, "{name}=\"${{{name}:-}}\"");
                let _ = writeln!(self.lookups, "[ -n \"${name}\" ] || {name}={d}");
            }
            Some(d) if d.is_empty() || d.split(' ').all(|w| quote(w) == w) => {
                let _ = writeln!(self.vars, "{name}=\"${{{name}:-{d}}}\"");
            }
            Some(d) => {
                let _ = writeln!(self.vars, "{name}=\"${{{name}:-}}\"");
                let _ = writeln!(self.vars, "[ -n \"${name}\" ] || {name}={}", quote(d));
            }
            None => {
                let _ = writeln!(self.vars, "{name}=\"${{{name}:?set {name}: see the comment above it}}\"");
            }
        }
    }

    /// `$VPC_ID`, declared from the scenario's VPC id, or required.
    pub fn vpc(&mut self, sc: &Scenario) -> &'static str {
        match &sc.vpc_id {
            Some(id) => self.var("VPC_ID", "the cluster's VPC, as imported", Some(id)),
            None => self.var(
                "VPC_ID",
                "the cluster's VPC: aws eks describe-cluster --name CLUSTER --query cluster.resourcesVpcConfig.vpcId --output text",
                None,
            ),
        }
        "\"$VPC_ID\""
    }

    /// `"$SUBNET_..."` for one of the scenario's subnets: its id when known, else looked up by
    /// its CIDR block in the VPC.
    pub fn existing_subnet(&mut self, sc: &Scenario, s: &SubnetSpec) -> String {
        self.vpc(sc);
        let name = var_name("SUBNET", &s.cidr.to_string());
        let from = format!("subnet {} ({}, {})", s.name, s.cidr, s.az);
        match &s.id {
            Some(id) => self.var(&name, &from, Some(id)),
            None => {
                self.helpers.insert(Helper::SubnetId);
                let lookup = format!("$(subnet_id {})", s.cidr);
                self.var(&name, &format!("{from}: its id, found by its CIDR block unless set"), Some(&lookup));
            }
        }
        format!("\"${name}\"")
    }

    /// Declares a variable the operator may set, with its default.
    pub fn setting(&mut self, name: &str, from: &str, default: &str) -> String {
        self.var(name, from, Some(default));
        format!("${name}")
    }

    /// Uses `h` in the body.
    pub fn helper(&mut self, h: Helper) {
        self.helpers.insert(h);
    }

    /// One line of the body.
    pub fn line(&mut self, l: impl AsRef<str>) {
        self.body.push_str(l.as_ref());
        self.body.push('\n');
    }

    /// A comment line in the body.
    pub fn note(&mut self, l: &str) {
        let _ = writeln!(self.body, "# {}", comment_text(l));
    }

    /// The script.
    pub fn render(&self) -> String {
        let mut out = format!(
            "#!/bin/sh\n# {}\n# Written by `podip plan --emit`. Needs the AWS CLI and credentials for the account. Safe to\n# run again: each step checks what exists first.\nset -eu\n\n",
            self.what
        );
        out.push_str(&self.vars);
        out.push_str("\nec2() { aws --region \"$REGION\" --output text ec2 \"$@\"; }\n\n");
        for h in &self.helpers {
            out.push_str(h.text());
            out.push('\n');
        }
        if !self.lookups.is_empty() {
            out.push_str(&self.lookups);
            out.push('\n');
        }
        out.push_str(&self.body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_every_byte_literal() {
        assert_eq!(quote("us-east-1"), "us-east-1");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's $(rm -rf /)"), r"'it'\''s $(rm -rf /)'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn a_comment_cannot_end_its_line() {
        assert_eq!(comment_text("a\nrm -rf /\r"), "a rm -rf / ");
    }
}
