//! Fixtures in the AWS CLI's output format (`--output json`), and malformed variants.

use super::*;

const VPCS: &str = r#"{
    "Vpcs": [
        {
            "CidrBlock": "10.0.0.0/16",
            "DhcpOptionsId": "dopt-0a1b2c3d",
            "State": "available",
            "VpcId": "vpc-0123456789abcdef0",
            "OwnerId": "111122223333",
            "InstanceTenancy": "default",
            "CidrBlockAssociationSet": [
                {"AssociationId": "vpc-cidr-assoc-1", "CidrBlock": "10.0.0.0/16", "CidrBlockState": {"State": "associated"}},
                {"AssociationId": "vpc-cidr-assoc-2", "CidrBlock": "100.64.0.0/16", "CidrBlockState": {"State": "associated"}},
                {"AssociationId": "vpc-cidr-assoc-3", "CidrBlock": "10.9.0.0/16", "CidrBlockState": {"State": "disassociated"}}
            ],
            "IsDefault": false
        }
    ]
}"#;

const SUBNETS: &str = r#"{
    "Subnets": [
        {
            "AvailabilityZone": "us-east-1a",
            "AvailabilityZoneId": "use1-az1",
            "AvailableIpAddressCount": 240,
            "CidrBlock": "10.0.1.0/24",
            "DefaultForAz": false,
            "MapPublicIpOnLaunch": false,
            "State": "available",
            "SubnetId": "subnet-0aaa",
            "VpcId": "vpc-0123456789abcdef0",
            "OwnerId": "111122223333",
            "AssignIpv6AddressOnCreation": false,
            "Ipv6CidrBlockAssociationSet": [],
            "Tags": [{"Key": "Name", "Value": "eks-private-a"}],
            "SubnetArn": "arn:aws:ec2:us-east-1:111122223333:subnet/subnet-0aaa"
        }
    ]
}"#;

const ENIS: &str = r#"{
    "NetworkInterfaces": [
        {
            "AvailabilityZone": "us-east-1a",
            "Description": "aws-K8S-i-0abc",
            "InterfaceType": "interface",
            "Ipv6Addresses": [],
            "MacAddress": "02:11:22:33:44:55",
            "NetworkInterfaceId": "eni-0111",
            "PrivateIpAddress": "10.0.1.10",
            "PrivateIpAddresses": [
                {"Primary": true, "PrivateIpAddress": "10.0.1.10"},
                {"Primary": false, "PrivateIpAddress": "10.0.1.77"}
            ],
            "Ipv4Prefixes": [{"Ipv4Prefix": "10.0.1.32/28"}],
            "Status": "in-use",
            "SubnetId": "subnet-0aaa",
            "VpcId": "vpc-0123456789abcdef0"
        },
        {
            "AvailabilityZone": "us-east-1a",
            "Description": "RDSNetworkInterface",
            "InterfaceType": "interface",
            "NetworkInterfaceId": "eni-0222",
            "PrivateIpAddress": "10.0.1.20",
            "PrivateIpAddresses": [{"Primary": true, "PrivateIpAddress": "10.0.1.20"}],
            "Status": "in-use",
            "SubnetId": "subnet-0aaa",
            "TagSet": [],
            "VpcId": "vpc-0123456789abcdef0"
        },
        {
            "Description": "",
            "NetworkInterfaceId": "eni-0333",
            "PrivateIpAddresses": [{"Primary": true, "PrivateIpAddress": "10.0.1.30"}],
            "SubnetId": "subnet-0aaa",
            "TagSet": [{"Key": "cluster.k8s.amazonaws.com/name", "Value": "prod"}]
        }
    ]
}"#;

const RESERVATIONS: &str = r#"{
    "SubnetIpv4CidrReservations": [
        {
            "SubnetCidrReservationId": "scr-0123",
            "SubnetId": "subnet-0aaa",
            "Cidr": "10.0.1.128/26",
            "ReservationType": "prefix",
            "OwnerId": "111122223333"
        }
    ],
    "SubnetIpv6CidrReservations": []
}"#;

#[test]
fn reads_real_shaped_exports() {
    let mut x = AwsExports::default();
    x.add_vpcs("vpcs.json", VPCS).unwrap();
    x.add_subnets("subnets.json", SUBNETS).unwrap();
    x.add_network_interfaces("enis.json", ENIS).unwrap();
    x.add_reservations("res.json", RESERVATIONS).unwrap();
    assert_eq!(x.vpcs[0].cidrs(), vec!["10.0.0.0/16".parse().unwrap(), "100.64.0.0/16".parse::<Ipv4Net>().unwrap()]);
    assert_eq!(x.subnets[0].availability_zone, "us-east-1a");
    // The cluster's own ENIs (aws-node's by description, one by the cluster tag) are not other
    // workloads' usage: the plan simulates the nodes itself. The database's ENI is.
    let u = &x.usage()["subnet-0aaa"];
    assert_eq!(u.addresses, vec![Ipv4Addr::new(10, 0, 1, 20)]);
    assert!(u.prefixes.is_empty());
    assert_eq!(x.nodes_own(), (2, 2 + 16 + 1));
    assert_eq!(u.reservations[0].kind, ReservationKind::Prefix);
}

#[test]
fn a_malformed_file_names_the_bad_field() {
    let bad = SUBNETS.replace("\"10.0.1.0/24\"", "\"10.0.1.0/33\"");
    let err = AwsExports::default().add_subnets("subnets.json", &bad).unwrap_err();
    assert_eq!(err.path, "Subnets[0].CidrBlock");
    assert!(err.to_string().starts_with("subnets.json: Subnets[0].CidrBlock: "), "{err}");

    let bad = ENIS.replace("\"10.0.1.77\"", "\"ten\"");
    let err = AwsExports::default().add_network_interfaces("enis.json", &bad).unwrap_err();
    assert_eq!(err.path, "NetworkInterfaces[0].PrivateIpAddresses[1].PrivateIpAddress");

    let bad = RESERVATIONS.replace("\"prefix\"", "\"bogus\"");
    let err = AwsExports::default().add_reservations("res.json", &bad).unwrap_err();
    assert_eq!(err.path, "SubnetIpv4CidrReservations[0].ReservationType");

    let err = AwsExports::default().add_vpcs("vpcs.json", "{\"Vpcs\": 3}").unwrap_err();
    assert_eq!(err.path, "Vpcs");
    let err = AwsExports::default().add_vpcs("vpcs.json", "not json").unwrap_err();
    assert_eq!(err.path, "(top)");
}
